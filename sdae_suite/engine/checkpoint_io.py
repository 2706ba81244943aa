"""Safe checkpoint loading for the whole suite, and the atomic file backend checkpoints are written through.

1. Loading: :func:`safe_torch_load` is one gate for every checkpoint, whatever its location.
   torch >= 2.6 unpickles with ``weights_only=True``: only allow-listed globals are resolved and only allow-listed
   callables are called. mmengine 0.10.7 predates that, and its Runner checkpoints carry a few non-tensor objects (the
   message hub's ``HistoryBuffer`` and numpy scalars/arrays), so the gate allow-lists exactly those data types, for its
   own loads only (``torch.serialization.safe_globals``), and keeps the protection on for everything else, instead of
   turning it off globally with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.
   No generic callable is ever allow-listed: ``getattr`` in particular would let a pickle walk from any allowed function
   to ``builtins.eval`` or to a module's ``__globals__`` (tests/test_checkpoint_security.py builds both exploits and
   shows they run under a plain ``getattr`` allow-list). Old mmengine checkpoints do contain
   ``getattr(HistoryBuffer, 'min')`` (pickle protocol 2 writes a nested qualified name that way), so the name
   ``builtins.getattr`` resolves to :func:`_history_buffer_statistic`, which returns HistoryBuffer's statistics methods
   and refuses anything else. Checkpoints the suite writes do not contain it (see :func:`_reduce_history_buffer`).
   Every scheme mmengine's ``CheckpointLoader`` knows (local paths, http/https, torchvision://, modelzoo://,
   open-mmlab://, openmmlab://, mmcls://, pavi://, s3:// and petrel) has a gated loader here: remote files are first
   downloaded (into torch's hub cache, like mmengine does) or read as bytes, then go through the gate.
2. The one global installation, :func:`install_safe_checkpoint_io`, called by every entry point (tools/*.py) and by our
   configs' ``custom_imports`` (module :mod:`sdae_suite.engine.safe_io_setup`). Why it has to be global: mmengine's
   Runner (``load_from``, ``--resume``) and every toolbox's ``init_cfg=dict(type='Pretrained')`` load through
   ``CheckpointLoader``, whose loaders for the remote schemes call ``torch.hub.load_state_dict_from_url`` with
   ``weights_only=False``: a URL in a config would bypass the allow-list entirely. Nothing a config or an entry point
   can pass routes those loads elsewhere, so the installation routes mmengine's schemes through the gate. Importing any
   library module of the suite changes nothing in torch or mmengine; the two that install it on import are the
   entry points' package ``sdae_suite.commands`` and ``sdae_suite.engine.safe_io_setup`` (for configs).
3. Saving: mmengine writes checkpoints with ``LocalBackend.put`` straight onto the target path: a run killed mid-write
   leaves a truncated ``epoch_N.pth`` that ``--resume`` then picks. :class:`AtomicLocalBackend` writes to a temporary
   file in the same folder, fsyncs and renames (atomic on POSIX); it is registered under a name of its own and used
   by :class:`sdae_suite.engine.hooks.CrashSafeCheckpointHook`, which also makes the rotation crash-safe.
   A write that fails (disk full, quota, I/O error) surfaces from ``Runner.save_checkpoint`` as the atomic writer's
   :class:`~sdae_suite.engine.atomic.WriteFailedError`, unchanged: mmengine's ``save_checkpoint`` runs ``torch.save``
   into memory and hands the bytes to this backend's ``put``, the only step that touches the file system, and nothing
   on the way catches it. The earlier checkpoints and ``last_checkpoint`` are untouched.
"""
from __future__ import annotations

import argparse
import codecs
import io
import logging
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import print_log
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import CheckpointLoader
from mmengine.runner import checkpoint as _mm_ckpt

from .atomic import atomic_write_bytes


class UnsafeCheckpointError(RuntimeError):
    """The checkpoint holds objects outside the allow-list; it was not unpickled."""


def _numpy_globals() -> list[Any]:
    core = np._core.multiarray  # numpy >= 2 pickles arrays and scalars through numpy._core
    dtype_classes = {type(np.dtype(t)) for t in (
        'bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64',
        'float16', 'float32', 'float64', 'complex64', 'complex128', 'str', 'object')}
    return [core._reconstruct, core.scalar, np.ndarray, np.dtype, *sorted(dtype_classes, key=str)]


_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')  # registered by HistoryBuffer._set_default_statistics


def _history_buffer_statistic(owner: Any, name: Any) -> Any:
    """Stands in for ``builtins.getattr`` while unpickling, and resolves only what old mmengine checkpoints need:
    ``getattr(HistoryBuffer, <statistics method>)``. Any other use is how an attacker would reach ``eval``."""
    methods = {*_DEFAULT_STATISTICS, *HistoryBuffer._statistics_methods}
    if owner is HistoryBuffer and isinstance(name, str) and name in methods:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'the file calls getattr({_short(owner)}, {name!r}); the only attribute lookups a checkpoint may contain are '
        f'HistoryBuffer statistics methods ({", ".join(sorted(methods))}). Attribute lookups are how a pickle reaches '
        f'functions that run code')


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) < 80 else text[:77] + '...'


def _rebuild_history_buffer(state: dict, statistics: list[str]) -> HistoryBuffer:
    """Inverse of :func:`_reduce_history_buffer`: the statistics methods come back by name from the class."""
    buf = HistoryBuffer.__new__(HistoryBuffer)
    buf._set_default_statistics()
    unknown = sorted(set(statistics) - set(HistoryBuffer._statistics_methods))
    if unknown:  # registered by user code that is not imported in this process
        print_log(f'HistoryBuffer statistics {unknown} of the checkpoint are not registered here; import the module '
                  f'that registers them (HistoryBuffer.register_statistics) before resuming', logger='current',
                  level=logging.WARNING)
    buf.__dict__.update(state)
    return buf


def _reduce_history_buffer(self: HistoryBuffer) -> tuple:
    """Pickle a HistoryBuffer as data plus the NAMES of its statistics methods. mmengine's ``__getstate__`` stores the
    methods themselves, which pickle protocol 2 writes as ``getattr(HistoryBuffer, 'min')`` -- the reason old files
    need :func:`_history_buffer_statistic`. Files written with this reduce need no attribute lookup at all."""
    state = {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}
    return _rebuild_history_buffer, (state, sorted(self._statistics_methods))


# Data types only: each is called by the unpickler with data from the file, and none of them can reach code.
# argparse.Namespace: official SdAE / MAE checkpoints store their command line as `args` (plain attribute data).
ALLOWED_GLOBALS: list[Any] = [HistoryBuffer, _rebuild_history_buffer, codecs.encode, argparse.Namespace,
                              *_numpy_globals()]
# ... and the one name that is not what it says: `builtins.getattr` in a file resolves to the statistics lookup above.
_GATE_GLOBALS: list[Any] = [*ALLOWED_GLOBALS, (_history_buffer_statistic, 'builtins.getattr')]


def _refused(name: str, e: Exception) -> UnsafeCheckpointError:
    lines = str(e).splitlines()
    culprit = next((ln.strip() for ln in lines if 'nsupported' in ln or 'getattr' in ln), lines[0] if lines else '')
    return UnsafeCheckpointError(
        f'{name}: refused to unpickle: it contains objects outside the allow-list of checkpoint types, and loading '
        f'it could run code ({culprit[:300]}). If you trust where this file comes from, re-save only its tensors once '
        f'(torch.load(..., weights_only=False), then torch.save(state_dict, new_path)) and use the new file.')


def _load_gated(source: str | io.BytesIO, name: str, map_location: Any) -> Any:
    """The gate itself: ``torch.load(weights_only=True)`` with the allow-list; errors name ``name``."""
    try:
        with torch.serialization.safe_globals(_GATE_GLOBALS):  # this load only: torch's global allow-list is untouched
            return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refused(name, e) from None
    except (RuntimeError, EOFError) as e:
        if 'failed finding central directory' in str(e) or 'PytorchStreamReader' in str(e) or isinstance(e, EOFError):
            raise RuntimeError(f'{name}: the checkpoint file is truncated or corrupt ({e}); it was probably written by '
                               f'a run that was killed while saving. Delete it; use an earlier checkpoint.') from None
        raise
    except (ValueError, IndexError, KeyError) as e:  # e.g. a text file: torch's legacy reader fails deep inside
        raise RuntimeError(f'{name}: not a PyTorch checkpoint ({type(e).__name__}: {e}); pass a .pth/.pt file written '
                           f'by torch.save') from None


def _local_file(filename: str | os.PathLike) -> Path:
    path = Path(os.path.expanduser(str(filename)))
    if path.is_dir():
        inside = sorted(path.glob('*.pth'), key=lambda p: p.stat().st_mtime)
        hint = f' (it holds {len(inside)} .pth files, newest: {inside[-1].name})' if inside else ''
        raise IsADirectoryError(f'{path} is a directory, not a checkpoint file{hint}; pass the checkpoint file itself')
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path} (check the path; relative paths are from {Path.cwd()})')
    return path


def _download(url: str) -> Path:
    """Fetch ``url`` into torch's hub cache once (rank 0 first, as mmengine does) and return the local file."""
    from mmengine.dist import barrier, get_dist_info

    cache = Path(torch.hub.get_dir()) / 'checkpoints'
    target = cache / (os.path.basename(urlparse(url).path) or 'checkpoint.pth')
    rank, world = get_dist_info()
    if rank == 0 and not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), progress=False)  # writes a temp file, then renames
    if world > 1:
        barrier()
        if not target.is_file():  # another node, with a cache of its own
            cache.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(target), progress=False)
    return target


def safe_torch_load(filename: str | os.PathLike, map_location: Any = 'cpu') -> Any:
    """Load a checkpoint from any location mmengine understands, always through the weights_only gate.

    Local paths, ``http(s)://`` URLs and the model-zoo schemes are resolved to a local file (downloads are cached in
    torch's hub folder); ``s3://``, petrel and ``pavi://`` are read through mmengine's file backends."""
    filename = str(filename)
    # mmengine's rule (the longest matching prefix wins), over our table and the schemes mmengine knows: a scheme only
    # mmengine knows (one a newer mmengine or another library adds) is refused rather than read unchecked.
    schemes = {**{p: _unknown_scheme(p) for p in CheckpointLoader._schemes}, **_PREFIX_LOADERS}
    prefix = next(p for p in sorted(schemes, key=len, reverse=True) if re.match(p, filename))
    return schemes[prefix](filename, map_location)


# ---- every scheme of mmengine's CheckpointLoader, routed through the gate ----

def _load_local(filename: str, map_location: Any = None) -> Any:
    path = _local_file(filename)
    return _load_gated(str(path), str(path), map_location)


def _load_http(filename: str, map_location: Any = None) -> Any:
    local = _download(filename)
    return _load_gated(str(local), f'{filename} (downloaded to {local})', map_location)


def _load_torchvision(filename: str, map_location: Any = None) -> Any:
    name = filename.split('://', 1)[1]
    urls = _mm_ckpt.get_torchvision_models()
    if name not in urls:
        raise KeyError(f'{filename}: torchvision has no model named {name!r}')
    return _load_http(urls[name], map_location)


def _load_openmmlab(filename: str, map_location: Any = None) -> Any:
    name = filename.split('://', 1)[1]
    name = _mm_ckpt.get_deprecated_model_names().get(name, name)
    urls = _mm_ckpt.get_external_models()
    if name not in urls:
        raise KeyError(f'{filename}: the OpenMMLab model zoo has no model named {name!r}')
    url = urls[name]
    if url.startswith(('http://', 'https://')):
        return _load_http(url, map_location)
    return _load_local(os.path.join(_mm_ckpt._get_mmengine_home(), url), map_location)


def _load_mmcls(filename: str, map_location: Any = None) -> Any:
    name = filename.split('://', 1)[1]
    urls = _mm_ckpt.get_mmcls_models()
    if name not in urls:
        raise KeyError(f'{filename}: the mmcls model zoo has no model named {name!r}')
    return _mm_ckpt._process_mmcls_checkpoint(_load_http(urls[name], map_location))


def _load_pavi(filename: str, map_location: Any = None) -> Any:
    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError(f'{filename}: reading pavi:// checkpoints needs the pavi package') from None
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, model.name)
        model.download(local)
        return _load_gated(local, f'{filename} (downloaded from pavi)', map_location)


def _load_ceph(filename: str, map_location: Any = None, backend: str = 'petrel') -> Any:
    from mmengine.fileio import get_file_backend

    data = get_file_backend(filename, backend_args={'backend': backend}).get(filename)
    return _load_gated(io.BytesIO(data), filename, map_location)


_SCHEMES = {
    '': _load_local,
    ('http://', 'https://'): _load_http,
    ('modelzoo://', 'torchvision://'): _load_torchvision,
    ('open-mmlab://', 'openmmlab://'): _load_openmmlab,
    'mmcls://': _load_mmcls,
    'pavi://': _load_pavi,
    r'(\S+\:)?s3://': _load_ceph,
    r'(\S+\:)?petrel://': _load_ceph,
}
_SCHEME_LOADERS = set(_SCHEMES.values())
_PREFIX_LOADERS = {p: loader for prefixes, loader in _SCHEMES.items()
                   for p in ((prefixes,) if isinstance(prefixes, str) else prefixes)}


def install_safe_checkpoint_io() -> None:
    """The suite's one global change to other libraries (module docstring, point 2); idempotent, cheap.

    - every scheme of mmengine's ``CheckpointLoader`` loads through the gate; a scheme we do not know (one a newer
      mmengine or another library adds) is refused rather than left on an unchecked ``torch.load``;
    - ``HistoryBuffer`` pickles as data plus method NAMES, so the checkpoints written need no ``getattr`` to load."""
    HistoryBuffer.__reduce__ = _reduce_history_buffer  # type: ignore[method-assign]
    for prefixes, loader in _SCHEMES.items():
        CheckpointLoader.register_scheme(prefixes=prefixes, loader=loader, force=True)
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if loader not in _SCHEME_LOADERS:
            CheckpointLoader.register_scheme(prefixes=prefix, loader=_unknown_scheme(prefix), force=True)


def is_installed() -> bool:
    """Does every scheme mmengine knows load through the gate (what `make doctor` checks)?"""
    return HistoryBuffer.__reduce__ is _reduce_history_buffer and \
        all(loader in _SCHEME_LOADERS or loader.__name__ == '_load_unknown_scheme'
            for loader in CheckpointLoader._schemes.values())


def _unknown_scheme(prefix: str):
    def _load_unknown_scheme(filename: str, map_location: Any = None) -> Any:
        raise UnsafeCheckpointError(
            f'{filename}: checkpoints with the scheme {prefix!r} are not read by this suite, because its loader does '
            f'not go through the weights_only gate (sdae_suite/engine/checkpoint_io.py). Download the file and '
            f'pass its local path.')
    return _load_unknown_scheme


# ---- saving ----

ATOMIC_BACKEND = 'sdae_atomic_local'


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic ``put`` / ``put_text``, under a name of its own: our checkpoint hook
    writes through it (``backend_args=dict(backend='sdae_atomic_local')``); mmengine's own ``local`` is untouched."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = 'utf-8') -> None:
        atomic_write_bytes(obj.encode(encoding), filepath)


