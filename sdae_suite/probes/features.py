"""Frozen features of a checkpoint's encoder, computed once and cached on disk.

The encoder is the suite's one ViT (:class:`sdae_suite.backbones.vit.VisionTransformer`), loaded with
:func:`sdae_suite.backbones.pretrained.load_pretrained` (every layout that loader accepts), or a random init for a seed.
Its architecture comes from the checkpoint's metadata (exported backbones: ``meta['arch']``; raw pretraining
checkpoints: ``meta['sdae']['arch']``) or, for layouts without one, from the caller.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sdae_suite.backbones.pretrained import load_pretrained, read_checkpoint
from sdae_suite.backbones.vit import ARCH_KEYS, VisionTransformer, normalize_pixels
from sdae_suite.engine.atomic import atomic_torch_save
from sdae_suite.engine.safetensors_io import SafetensorsFileError

# Bump when the way features are computed changes: old cache files then stop matching.
FEATURE_VERSION = 1
# The pretraining configs' ImgDataPreprocessor (ImageNet mean / std in 0-255 units).


class ProbeCheckpointError(ValueError):
    """The checkpoint cannot be probed as given; the message names the file and the fix."""


def checkpoint_arch(path: str | os.PathLike) -> dict | None:
    """The architecture a checkpoint (``.pth`` or ``.safetensors``) records about itself, or None."""
    try:
        obj = read_checkpoint(path)
    except SafetensorsFileError as e:  # truncated, corrupt, a renamed pickle: one line for tools/probe.py to print
        raise ProbeCheckpointError(str(e)) from None
    meta = obj.get('meta') if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return None
    for arch in (meta.get('arch'), (meta.get('sdae') or {}).get('arch')):
        if isinstance(arch, dict) and all(k in arch for k in ('patch_size', 'embed_dim', 'depth', 'num_heads')):
            return {k: arch[k] for k in ARCH_KEYS if k in arch}
    return None


def build_encoder(checkpoint: str | os.PathLike | None, arch: dict | None = None, branch: str | None = 'student',
                  seed: int = 0) -> tuple[VisionTransformer, dict]:
    """The frozen encoder in eval mode and the architecture it was built with.

    checkpoint None: a random init drawn with ``seed`` (the suite's MAE init). Otherwise the checkpoint's own
    architecture wins over ``arch``; ``arch`` is needed only for layouts that do not record one (timm, official).
    """
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise ProbeCheckpointError(f'{checkpoint}: checkpoint not found')
        arch = checkpoint_arch(checkpoint) or arch
        if arch is None:
            raise ProbeCheckpointError(
                f'{checkpoint}: this checkpoint does not record its architecture (no meta arch); pass it, e.g. '
                f'tools/probe.py --arch img_size=224,patch_size=16,embed_dim=768,depth=12,num_heads=12')
    elif arch is None:
        raise ProbeCheckpointError('random init needs an architecture (--arch ...)')
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VisionTransformer(**{k: v for k, v in arch.items() if k in ARCH_KEYS})
    if checkpoint is not None:
        load_pretrained(model, checkpoint, branch)  # strict: a missing or mis-shaped key is an error naming it
    return model.eval().requires_grad_(False), dict(arch)


@torch.no_grad()
def encode(model: VisionTransformer, images: torch.Tensor, batch_size: int = 64, patch_tokens: bool = False
           ) -> torch.Tensor:
    """images: uint8 [N, 3, S, S] -> pooled features [N, D] (mean of the patch tokens after the final norm, MAE's
    global pool), or with ``patch_tokens`` the last block's normalised patch tokens as maps [N, D, h, w].

    Runs on the model's device (the probe hook probes a pretraining model where it trains, a GPU there); the features
    come back on the CPU, where the probes' labels are."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs = []
    for i in range(0, len(images), batch_size):
        x = normalize_pixels(images[i:i + batch_size].to(device))
        tokens = model(x)[:, model.num_prefix:]  # [B, h*w, D]
        if patch_tokens:
            h, w = model.grid_of(x.shape[-2:])
            outs.append(tokens.transpose(1, 2).reshape(len(x), -1, h, w).cpu())
        else:
            outs.append(tokens.mean(dim=1).cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0)


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's content (the checkpoint part of a cache key: a file rewritten in place is recomputed).
    Hashed once per (path, size, mtime) in a process: a ViT-B checkpoint is 350 MB."""
    st = os.stat(path)
    return _digest(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def files_signature(paths: list[str]) -> str:
    """What the data part of a cache key depends on: every file's path, size and mtime."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f'{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
    return h.hexdigest()


def cache_key(checkpoint: str | None, branch: str | None, seed: int, data_signature: str, settings: dict) -> str:
    ckpt = {'random_init_seed': seed} if checkpoint is None else {'sha256': file_digest(checkpoint), 'branch': branch}
    blob = json.dumps(dict(version=FEATURE_VERSION, checkpoint=ckpt, data=data_signature, settings=settings),
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cached(cache_dir: str | os.PathLike | None, key: str, compute) -> tuple[dict[str, Any], bool]:
    """``compute()`` -> dict of tensors, stored under ``cache_dir/<key>.pt``; (value, was_cached)."""
    if cache_dir is None:
        return compute(), False
    path = Path(cache_dir) / f'{key}.pt'
    if path.is_file():
        try:
            return torch.load(path, map_location='cpu', weights_only=True), True
        except Exception:  # noqa: BLE001  (a truncated cache file is recomputed, never trusted)
            path.unlink(missing_ok=True)
    value = compute()
    atomic_torch_save(value, path)
    return value, False


def interpolate_to(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """logits: [N, C, h, w] -> [N, C, H, W], bilinear (the linear protocol's upsampling)."""
    return F.interpolate(logits, size=size, mode='bilinear', align_corners=False)
