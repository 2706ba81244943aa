"""Forward + backward time of the ViTDet-config backbone against a reference ViTDet backbone, measured side by side.

The reference is timm's ``samvit_base_patch16`` (in the pinned stack): the ViTDet backbone architecture -- windows of
14, global blocks 2/5/8/11, decomposed relative positions, no cls token -- built at ``img_size`` with its neck removed
(so both return the last block's map). Ours is ``SdAEViT`` built from ``model.backbone`` of the ViTDet config
(including its drop path and its 224-grid position table resized per input, as ViTDet does).

Timing: each round runs one forward + backward of each model on the same input, alternating which goes first, after
``warmup`` untimed rounds; the result is the median over rounds per model and the median of the per-round ratios. The
two are interleaved in one process so that load from other processes on a shared machine hits both alike. On a CPU
the ratio is taken on this process's CPU time (``time.process_time``), which other processes' load does not inflate the
way it inflates wall time (on a shared 2-core machine wall times of the same step varied 2x); wall times are kept too.
"""
from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from sdae_suite import REPO_ROOT

ROOT = REPO_ROOT
VITDET_CONFIG = ROOT / 'det_configs' / 'sdae_vitdet_maskrcnn_100e.py'


def backbone_kwargs(config: str | Path = VITDET_CONFIG) -> dict:
    """``model.backbone`` of ``config`` as ``SdAEViT`` keyword arguments (no type, no checkpoint)."""
    from mmengine.config import Config

    kwargs = dict(Config.fromfile(str(config)).model.backbone)
    kwargs.pop('type'), kwargs.pop('init_cfg', None)
    return kwargs


def vit_from_config(img_size: int, config: str | Path = VITDET_CONFIG) -> nn.Module:
    """The config's backbone for ``img_size`` inputs (global rel-pos tables sized for that grid), without weights."""
    from sdae_suite.backbones.vit_backbone import SdAEViT

    return SdAEViT(**dict(backbone_kwargs(config), rel_pos_img_size=img_size))


def cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timm_samvit_reference(img_size: int, drop_path_rate: float, **overrides) -> nn.Module:
    """timm ``samvit_base_patch16`` at ``img_size`` without its neck: forward_features -> [B, D, H/16, W/16]."""
    import timm

    model = timm.create_model('samvit_base_patch16', pretrained=False, img_size=img_size, num_classes=0,
                              drop_path_rate=drop_path_rate, **overrides)
    model.neck = nn.Identity()
    return model


@dataclass
class SpeedResult:
    img_size: int
    batch: int
    threads: int
    device: str
    rounds: int
    warmup: int
    clock: str = 'wall'
    seconds: dict[str, list[float]] = field(default_factory=dict)
    wall_seconds: dict[str, list[float]] = field(default_factory=dict)
    median_s: dict[str, float] = field(default_factory=dict)
    ratio_of_medians: float = 0.0
    median_of_ratios: float = 0.0
    machine: str = ''

    def to_dict(self) -> dict:
        return asdict(self)


def _step(model: nn.Module, x: torch.Tensor, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor],
          device: torch.device) -> tuple[float, float]:
    """One forward + backward: (wall seconds, this process's CPU seconds)."""
    model.zero_grad(set_to_none=True)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = forward(model, x)
    out.float().sum().backward()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, time.process_time() - c0


def _ours_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)[-1]


def _timm_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_features(x)


def measure(img_size: int = 1024, batch: int = 1, rounds: int = 3, warmup: int = 1, threads: int | None = None,
            device: str = 'cpu', seed: int = 0, config: str | Path = VITDET_CONFIG) -> SpeedResult:
    """Time ours ('sdae_vitdet') against timm's ('timm_samvit'); ratio = ours / reference (< 1: ours faster).
    ``threads``: torch's thread count during the measurement; the caller's is put back after it."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _measure(img_size, batch, rounds, warmup, device, seed, config)
    finally:
        torch.set_num_threads(before)


def _measure(img_size: int, batch: int, rounds: int, warmup: int, device: str, seed: int,
             config: str | Path) -> SpeedResult:
    dev = torch.device(device)
    torch.manual_seed(seed)
    ours = vit_from_config(img_size, config).to(dev).train()
    ref = timm_samvit_reference(img_size, backbone_kwargs(config).get('drop_path_rate', 0.0)).to(dev).train()
    x = torch.randn(batch, 3, img_size, img_size, device=dev)
    models = {'sdae_vitdet': (ours, _ours_forward), 'timm_samvit': (ref, _timm_forward)}
    times: dict[str, list[float]] = {k: [] for k in models}
    walls: dict[str, list[float]] = {k: [] for k in models}
    clock = 'process cpu' if dev.type == 'cpu' else 'wall'
    for r in range(warmup + rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))
        for name in order:
            model, fwd = models[name]
            wall, cpu = _step(model, x, fwd, dev)
            if r >= warmup:
                times[name].append(cpu if clock == 'process cpu' else wall)
                walls[name].append(wall)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [a / b for a, b in zip(times['sdae_vitdet'], times['timm_samvit'], strict=True)]
    machine = (f'{cpu_name()} ({torch.get_num_threads()} threads)' if dev.type == 'cpu'
               else torch.cuda.get_device_name(dev)) + f', torch {torch.__version__}'

    return SpeedResult(img_size=img_size, batch=batch, threads=torch.get_num_threads(), device=str(dev),
                       rounds=rounds, warmup=warmup, clock=clock, seconds=times, wall_seconds=walls, median_s=med,
                       ratio_of_medians=med['sdae_vitdet'] / med['timm_samvit'],
                       median_of_ratios=statistics.median(ratios), machine=machine)
