"""What a torchrun launch (``--launcher pytorch``) needs on a machine without CUDA, shared by tools/pretrain.py and
tools/train.py. mmengine assumes GPUs in three places: ``init_dist`` calls ``torch.cuda.set_device`` unconditionally,
its default DDP wrapper passes a GPU index as ``device_ids``, and SyncBN layers need CUDA. Written by hand because
mmengine has no CPU-distributed mode; each change below removes one of those assumptions and nothing else. Also here:
the collective timeout every multi-process run gets from its config, and the hooks every training run has.
"""
from __future__ import annotations

import datetime

import torch
import torch.distributed as dist
from mmengine.config import Config


def replace_syncbn(node) -> int:
    """SyncBN -> BN in place in a config subtree; returns how many were replaced."""
    n = 0
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
            n += 1
        for v in node.values():
            n += replace_syncbn(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            n += replace_syncbn(v)
    return n


def adapt_cpu_launch(cfg: Config, launcher: str) -> list[str]:
    """Config changes for several CPU processes (none on a CUDA machine or for one plain process); returns them as
    notes to print. Call :func:`join_cpu_process_group` before building the Runner."""
    if launcher == 'none' or torch.cuda.is_available():
        return []
    notes = []
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    notes.append('no CUDA: distributed backend gloo')
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    if wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        # mmengine's own default, without the GPU index (find_unused_parameters is a config key it reads there)
        wrapper = {'type': 'MMDistributedDataParallel', 'broadcast_buffers': False,
                   'find_unused_parameters': cfg.get('find_unused_parameters', False), **wrapper, 'device_ids': None}
        cfg.model_wrapper_cfg = wrapper
        notes.append('no CUDA: DDP on CPU (device_ids=None)')
    n = replace_syncbn(cfg.model)
    if n:
        notes.append(f'no CUDA: {n} SyncBN layers in the config -> BN (SyncBN needs CUDA; each process normalises '
                     f'over its own batch)')
    return notes


DEFAULT_DIST_TIMEOUT_S = 600  # torch's NCCL default; gloo's is 30 min


def set_dist_timeout(cfg: Config) -> str:
    """The collective timeout comes from the config (``env_cfg.dist_cfg.timeout``, seconds; mmengine passes it to
    ``init_process_group``), default 10 min for both backends; RankHeartbeatHook names a silent rank well before it.
    Returns the line printed at start."""
    env_cfg = dict(cfg.get('env_cfg') or {})
    dist_cfg = dict(env_cfg.get('dist_cfg') or {'backend': 'nccl'})
    source = 'from the config'
    if dist_cfg.get('timeout') is None:
        dist_cfg['timeout'], source = DEFAULT_DIST_TIMEOUT_S, 'default; env_cfg.dist_cfg.timeout sets it'
    env_cfg['dist_cfg'] = dist_cfg
    cfg.env_cfg = env_cfg  # assigned, not set in place: Config.setdefault hands back a copy of a new dict
    return f"collective timeout {dist_cfg['timeout']} s ({source})"


def join_cpu_process_group(launcher: str, timeout_s: float | None = None) -> None:
    """Join torchrun's process group with gloo, before mmengine's Runner would (its init calls
    ``torch.cuda.set_device``); the Runner then uses the existing group. ``timeout_s``: the collective timeout."""
    if launcher == 'pytorch' and not torch.cuda.is_available() and not dist.is_initialized():
        kwargs = {'timeout': datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
        dist.init_process_group('gloo', **kwargs)


def add_custom_hooks(cfg: Config, *names: str) -> None:
    """Append hooks every training run of the suite has (RNGStateHook, PreemptionCheckpointHook) to
    ``cfg.custom_hooks`` unless the config already lists them."""
    hooks = list(cfg.get('custom_hooks') or [])
    have = {h.get('type') for h in hooks if isinstance(h, dict)}
    cfg.custom_hooks = hooks + [dict(type=n) for n in names if n not in have]
