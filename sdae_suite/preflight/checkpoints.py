"""Checkpoint files that cannot be what the run needs: a folder or a text file given as a checkpoint (checked from the
first bytes, before torch's unpickler turns them into ``IndexError: pop from empty list``), a ``.safetensors`` file
that is truncated, corrupt or a renamed pickle (checked from its header, never unpickled), and a checkpoint whose
weights are not those of the model being tested (mmengine only warns, and the test then reports an untrained model's
zero AP as a result)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from sdae_suite.engine.safetensors_io import is_safetensors, safetensors_problem

# torch.save writes a zip archive (torch >= 1.6) or, with _use_new_zipfile_serialization=False, a pickle (protocol 2+,
# first byte 0x80). Nothing else is a checkpoint torch.load reads.
_MAGIC = (b'PK\x03\x04', b'\x80')
# A test checkpoint may lack a few small tensors the model has (e.g. buffers added by a newer mmdet); more than this
# share of the model's values left at their initialisation means the test would measure an untrained model.
MAX_UNLOADED_FRACTION = 0.01
FIRST_KEYS = 5


class CheckpointMismatchError(RuntimeError):
    """The checkpoint is not a model of the config; the message gives the counts and the first keys."""


def checkpoint_file_problem(path: str | os.PathLike, what: str) -> str | None:
    """Why ``path`` cannot be a checkpoint (a sentence naming it), or None. URLs are left to mmengine (and to the
    backbone loader). A ``.safetensors`` path is validated by the safetensors library from its header: no pickle."""
    if '://' in str(path):
        return None
    p = Path(path)
    if p.is_dir():
        return f'{what} {p} is a directory, not a checkpoint file; pass the .pth file inside it'
    if not p.is_file():
        return f'checkpoint not found: {p} ({what}; relative paths are from {Path.cwd()})'
    if is_safetensors(p):
        problem = safetensors_problem(p)
        return f'{what} {problem}' if problem else None
    with p.open('rb') as fh:
        head = fh.read(4)
    if not head.startswith(_MAGIC):
        if safetensors_problem(p) is None:  # the loader picks the format by the name, as timm and Hugging Face do
            return f'{what} {p} is a safetensors file with another extension; rename it to {p.stem}.safetensors'
        return (f'{what} {p} is not a checkpoint: a torch checkpoint (torch.save) starts with a zip or pickle header, '
                f'this file starts with {head!r}; pass the .pth file written by training')
    return None


@dataclass
class KeyMatch:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # 'key: checkpoint shape vs model shape'
    unloaded_fraction: float = 0.0  # share of the model's values the checkpoint does not provide
    n_model: int = 0


def match_state_dict(model: nn.Module, state: dict[str, Any]) -> KeyMatch:
    """Compare a checkpoint's state_dict with ``model``'s keys and shapes, as mmengine's load_checkpoint would load it
    (after its default ``^module.`` prefix removal)."""
    state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
    own = (model.module if is_model_wrapper(model) else model).state_dict()
    m = KeyMatch(n_model=len(own))
    total = sum(v.numel() for v in own.values()) or 1
    unloaded = 0
    for key, value in own.items():
        if key not in state:
            m.missing.append(key)
            unloaded += value.numel()
        elif hasattr(state[key], 'shape') and tuple(state[key].shape) != tuple(value.shape):
            m.mismatched.append(f'{key}: {tuple(state[key].shape)} in the checkpoint vs {tuple(value.shape)}')
            unloaded += value.numel()
    m.unexpected = [k for k in state if k not in own]
    m.unloaded_fraction = unloaded / total
    return m


def describe(m: KeyMatch) -> str:
    return (f'{len(m.missing)} of {m.n_model} model keys missing (first: {m.missing[:FIRST_KEYS]}), '
            f'{len(m.unexpected)} unexpected keys (first: {m.unexpected[:FIRST_KEYS]}), '
            f'{len(m.mismatched)} shape mismatches (first: {m.mismatched[:FIRST_KEYS]}); '
            f'{m.unloaded_fraction:.1%} of the model\'s values would stay untrained')


class CheckpointFitsHook(Hook):
    """Refuses, when the runner loads ``load_from``, a checkpoint that leaves more than MAX_UNLOADED_FRACTION of the
    model unloaded or has any tensor of the wrong shape; warns about smaller differences."""

    priority = 'VERY_HIGH'

    def __init__(self, path: str, config: str):
        self.path, self.config = path, config

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
        m = match_state_dict(runner.model, state if isinstance(state, dict) else {})
        if m.mismatched or m.unloaded_fraction > MAX_UNLOADED_FRACTION:
            raise CheckpointMismatchError(
                f'{self.path} is not a checkpoint of the model of {self.config}: {describe(m)}. Testing it would '
                f'report an untrained model. Pass a checkpoint written by tools/train.py with this config.')
        if m.missing or m.unexpected:
            runner.logger.warning(f'{self.path}: loads into {self.config} with small differences: {describe(m)}')
