"""Backbone weights as ``.safetensors``: tensors only, no pickle, so a file from anywhere is read without trusting it.

The ``safetensors`` library does the format (header parse, offset and size checks, the tensors); this module adds
only what it does not: our provenance in the header, and one clear line naming the file and the fix when a file is not
what its name says.

- Written by tools/export_backbone.py next to the ``.pth`` (same stem, same weights, same
  :class:`sdae_suite.contracts.BackboneMeta`): :func:`backbone_bytes`, through the one atomic writer.
- Read by ``sdae_suite.backbones.pretrained`` for every ``--pretrained`` / ``init_cfg`` / probe path ending in
  ``.safetensors``: ours (meta in the header) and timm / Hugging Face hub ``model.safetensors`` (timm keys, no meta).
- Checked at the door (``sdae_suite.preflight.checkpoints``) from the header alone: :func:`safetensors_problem`.

Header metadata values must be strings: the meta is stored as JSON under :data:`META_KEY`, next to ``format='pt'``,
the value timm, Hugging Face ``transformers`` and ``huggingface_hub`` write and expect for PyTorch weights (transformers
refuses other values), so the file stays usable by those tools; ``meta['format']`` says it is our backbone export.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open

SUFFIX = '.safetensors'
META_KEY = 'sdae_suite.meta'
HEADER_FORMAT = 'pt'
# torch.save writes a zip archive (torch >= 1.6) or a pickle (first byte 0x80): what a renamed .pth starts with.
_TORCH_MAGIC = {b'PK\x03\x04': 'zip', b'\x80': 'pickle'}


class SafetensorsFileError(ValueError):
    """A ``.safetensors`` file that cannot be read; the message names the file and the fix."""


def is_safetensors(path: str | os.PathLike) -> bool:
    """Chosen by the name, as timm and Hugging Face do: a ``.safetensors`` path is never handed to the unpickler."""
    return str(path).lower().endswith(SUFFIX)


def backbone_bytes(state: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> bytes:
    """The file's bytes: ``state`` (contiguous tensors, none sharing memory) and ``meta`` as JSON in the header."""
    return safetensors.torch.save(dict(state), metadata={'format': HEADER_FORMAT, META_KEY: json.dumps(meta)})


def _explain(path: Path, e: Exception) -> str:
    """Why the safetensors library refused ``path``, in one line with the fix."""
    with path.open('rb') as fh:
        head = fh.read(4)
    kind = next((name for magic, name in _TORCH_MAGIC.items() if head.startswith(magic)), None)
    if kind is not None:
        return (f'{path} is not a safetensors file: it starts with a {kind} header, i.e. a torch.save checkpoint named '
                f'.safetensors (it was not unpickled). Rename it to .pth, where it goes through the weights-only '
                f'checkpoint gate, or export the backbone again with tools/export_backbone.py')
    return (f'{path} is truncated or corrupt: not a valid safetensors file ({e}); download it again, or export it '
            f'again with tools/export_backbone.py (which writes the .safetensors next to the .pth)')


def _meta(path: Path, header: dict[str, str] | None) -> dict[str, Any] | None:
    text = (header or {}).get(META_KEY)
    if text is None:
        return None  # timm / Hugging Face hub files carry no provenance of ours
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        meta, why = None, str(e)
    else:
        why = f'a JSON {type(meta).__name__}, not an object'
    if not isinstance(meta, dict):
        raise SafetensorsFileError(f'{path}: the header entry {META_KEY!r} is corrupt ({why}); export the backbone '
                                   f'again with tools/export_backbone.py')
    return meta


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a readable safetensors file (a line naming it and the fix), or None. Reads the header only
    (the library also checks that the tensors' byte ranges cover exactly the rest of the file)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework='pt') as f:
            _meta(path, f.metadata())
    except SafetensorError as e:
        return _explain(path, e)
    except SafetensorsFileError as e:
        return str(e)
    return None


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(tensors on the CPU, our meta or None). Raises :class:`SafetensorsFileError` for a file that is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path} (check the path; relative paths are from {Path.cwd()})')
    try:
        with safe_open(str(path), framework='pt', device='cpu') as f:
            meta = _meta(path, f.metadata())
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise SafetensorsFileError(_explain(path, e)) from None
    return tensors, meta
