"""Safe and atomic checkpoint I/O for the whole suite, installed once when ``backbones`` is imported.

1. Loading. torch >= 2.6 unpickles with ``weights_only=True``: only allow-listed globals are resolved and only
   allow-listed callables are called, so a checkpoint cannot run code. mmengine 0.10.7 predates that, and its Runner
   checkpoints carry a few non-tensor objects (the message hub's ``HistoryBuffer`` and numpy scalars/arrays). We
   allow-list exactly those and keep the protection on for everything else, instead of turning it off globally with
   TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD. mmengine's local checkpoint loader is replaced (through its own ``register_scheme``
   hook) by :func:`safe_torch_load`, so a refused file gets one clear message naming the file and the fix.
2. Saving. mmengine writes checkpoints with ``LocalBackend.put`` straight onto the target path: a run killed mid-write
   leaves a truncated ``epoch_N.pth`` that ``--resume`` then picks. We register a local backend that writes to a
   temporary file in the same folder, fsyncs and renames (atomic on POSIX), through mmengine's ``register_backend``.
"""
from __future__ import annotations

import argparse
import builtins
import codecs
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.fileio import io as _fileio_io
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import CheckpointLoader


class UnsafeCheckpointError(RuntimeError):
    """The checkpoint holds objects outside the allow-list; it was not unpickled."""


def _numpy_globals() -> list[Any]:
    core = np._core.multiarray  # numpy >= 2 pickles arrays and scalars through numpy._core
    dtype_classes = {type(np.dtype(t)) for t in (
        'bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64',
        'float16', 'float32', 'float64', 'complex64', 'complex128', 'str', 'object')}
    return [core._reconstruct, core.scalar, np.ndarray, np.dtype, *sorted(dtype_classes, key=str)]


# Exactly what mmengine / mmdet / mmseg Runner checkpoints contain beyond tensors and containers.
# `getattr` is needed because HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, 'min'); it does not
# open code execution: the unpickler still only calls allow-listed callables, so nothing reached through it is callable.
# argparse.Namespace: official SdAE / MAE checkpoints store their command line as `args`; it is plain attribute data.
ALLOWED_GLOBALS: list[Any] = [HistoryBuffer, codecs.encode, builtins.getattr, argparse.Namespace, *_numpy_globals()]
torch.serialization.add_safe_globals(ALLOWED_GLOBALS)


def safe_torch_load(path: str | os.PathLike, map_location: Any = 'cpu') -> Any:
    """``torch.load`` with ``weights_only=True`` and the suite's allow-list; clear errors for refused/broken files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path} (check the path; relative paths are from {Path.cwd()})')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = str(e).splitlines()
        culprit = next((ln.strip() for ln in lines if 'nsupported' in ln), lines[0] if lines else '')
        raise UnsafeCheckpointError(
            f'{path}: refused to unpickle: it contains objects outside the allow-list of checkpoint types, and '
            f'loading it could run code ({culprit[:300]}). If you trust where this file comes from, '
            f're-save only its tensors once (torch.load(..., weights_only=False), then '
            f'torch.save(state_dict, new_path)) '
            f'and use the new file.') from None
    except (RuntimeError, EOFError) as e:
        if 'failed finding central directory' in str(e) or 'PytorchStreamReader' in str(e) or isinstance(e, EOFError):
            raise RuntimeError(f'{path}: the checkpoint file is truncated or corrupt ({e}); it was probably written by '
                               f'a run that was killed while saving. Delete it; use an earlier checkpoint.') from None
        raise


@CheckpointLoader.register_scheme(prefixes='', force=True)
def _load_local_checkpoint(filename: str, map_location: Any = None) -> Any:
    """mmengine's scheme-less (local file) checkpoint loader, routed through :func:`safe_torch_load`."""
    return safe_torch_load(os.path.expanduser(filename), map_location=map_location)


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one, never a prefix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a truncated file behind."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(buf.getvalue(), path)


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic ``put`` / ``put_text`` (checkpoints, ``last_checkpoint``)."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = 'utf-8') -> None:
        atomic_write_bytes(obj.encode(encoding), filepath)


register_backend('local', AtomicLocalBackend, force=True, prefixes='')
_fileio_io.backend_instances.clear()  # instances created before this import would still be the non-atomic class
