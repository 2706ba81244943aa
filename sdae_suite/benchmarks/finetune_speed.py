"""ImageNet fine-tuning cost: our classifier's training step against timm's ViT doing the same step, measured side by
side in ONE process; and the training data pipeline's images/s per DataLoader worker, with the number of workers a
GPU node needs to keep its GPUs fed.

The step is what training does per iteration, on a fixed synthetic batch (no data loading): timm ``Mixup`` (in place on
a fresh copy of the batch) -> forward -> ``SoftTargetCrossEntropy`` -> backward -> AdamW step on the layer-decay
parameter groups -> zero grad. Both sides take the recipe's settings from the fine-tuning config
(``cls_configs/sdae_vit-base-p16_8xb128-ft-100e_in1k.py``: mixup / cutmix / smoothing, drop path 0.1, AdamW betas,
weight decay, layer decay 0.65), with the architecture scaled by ``FinetuneSpec``:

- ours ('sdae_cls'): ``SdAEImageClassifier`` built from the config's ``model`` through mmengine's registry (our
  ``SdAEViT`` -> mean of the patch tokens -> ``fc_norm`` -> ``head``; its own Mixup and loss), its optimiser from our
  ``LayerDecayConstructor`` with the config's ``paramwise_cfg``;
- reference ('timm_vit'): timm's ``vit_base_patch16_224`` (``global_pool='avg', fc_norm=True``: the computation of MAE's
  ``models_vit``) with the same drop path and classes, holding the same weights (copied from ours), its optimiser from
  timm's ``param_groups_layer_decay`` (MAE's ``lr_decay`` rule) with the same AdamW arguments.

Both take the same random draws in a round (numpy for Mixup's lambda and box, torch for drop path are seeded per
round), so they do the same work. Timing: each round runs one step of each model, alternating which goes first (A B,
B A, ...), after ``warmup`` untimed rounds; medians over rounds per model, the ratio ours / timm as the ratio of the
medians and the median of the per-round ratios. Wall time and this process's CPU time are both recorded; on a CPU the
headline ratio is on CPU time, which other processes' load inflates less than wall time (the convention of
``vitdet_speed``), and the load average is recorded before and after.

Data pipeline: JPEGs of ImageNet's typical size and mean file size (500 x 375, ~110 KB: smooth colour fields, shapes,
texture and noise, so that decoding costs what a photo costs) read through ``SdAEImageFolder`` with the config's
training transform (``finetune_train_transform``: RandomResizedCrop bicubic, flip, RandAugment rand-m9-mstd0.5-inc1,
normalise, random erasing) in this one process with one torch thread, as a DataLoader worker runs it. Images/s per
worker is taken on CPU time (what one dedicated core gives); the shared-memory hand-over of each sample to the main
process and collation are not included. A sample whose transform raises is counted (``transform_errors``) rather
than ending the measurement: in training it would end the run.
"""
from __future__ import annotations

import collections
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sdae_suite import REPO_ROOT

from .hardware import count_flops, vit_forward_flops
from .speed import SIZES

FINETUNE_CONFIG = REPO_ROOT / 'cls_configs' / 'sdae_vit-base-p16_8xb128-ft-100e_in1k.py'
OURS, REFERENCE = 'sdae_cls', 'timm_vit'
OURS_OVER_TIMM_TARGET = 1.02
# Per-GPU ViT-B/16 fine-tuning throughput used for the workers estimate when none is given. An ASSUMPTION for an
# H100-class GPU at bf16 in eager PyTorch, not a measurement: the suite's own bf16 measurement on one H200 (the MAE
# pretraining step, 151 TFLOP/s achieved; docs/performance.md) would give ~1,400 img/s at the fine-tuning step's
# ~105 GFLOP per image, and `make gpu-check` now measures the fine-tuning step itself -- pass its figure instead.
DEFAULT_GPU_IMG_PER_S = 1000.0
GPUS_PER_NODE = 8
# ImageNet's typical training image (its most frequent size); its mean JPEG is ~110 KB (~140 GB / 1.28 M files).
JPEG_SIZE = (500, 375)


@dataclass
class FinetuneSpec:
    size: str = 'base'          # a key of benchmarks.speed.SIZES
    img_size: int = 224
    patch_size: int = 16
    num_classes: int = 1000
    batch: int = 8              # even: Mixup mixes the batch with its reverse
    device: str = 'cpu'
    dtype: str = 'fp32'         # fp32 | bf16 (autocast)
    drop_path_rate: float = 0.1
    config: str = str(FINETUNE_CONFIG)

    @property
    def arch(self) -> dict:
        dim, depth, heads = SIZES[self.size]
        return dict(img_size=self.img_size, patch_size=self.patch_size, embed_dim=dim, depth=depth, num_heads=heads)


def load_recipe(config: str | Path = FINETUNE_CONFIG):
    from mmengine.config import Config

    return Config.fromfile(str(config))


def build_ours(spec: FinetuneSpec, cfg=None) -> nn.Module:
    """``SdAEImageClassifier`` from the config's ``model`` (random init, no checkpoint loaded), scaled by ``spec``."""
    from mmengine.registry import MODELS

    import sdae_suite.classification  # noqa: F401  (registers SdAEImageClassifier)

    cfg = cfg or load_recipe(spec.config)
    model_cfg = cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else dict(cfg.model)
    backbone = dict(model_cfg['backbone'], **spec.arch, drop_path_rate=spec.drop_path_rate, init_cfg=None)
    mixup = dict(model_cfg['mixup'], num_classes=spec.num_classes) if model_cfg.get('mixup') else None
    model_cfg.update(backbone=backbone, num_classes=spec.num_classes, mixup=mixup)
    return MODELS.build(model_cfg)


def build_timm(spec: FinetuneSpec) -> nn.Module:
    """timm's ``vit_base_patch16_224`` with the average-pool + fc_norm head (MAE's ``models_vit``), scaled by
    ``spec``."""
    import timm

    return timm.create_model('vit_base_patch16_224', pretrained=False, global_pool='avg', fc_norm=True,
                             drop_path_rate=spec.drop_path_rate, num_classes=spec.num_classes, **spec.arch)


def copy_weights(ours: nn.Module, ref: nn.Module) -> None:
    """Load our classifier's weights into the timm model: the names are timm's once ``backbone.`` is dropped."""
    state = {k.removeprefix('backbone.'): v for k, v in ours.state_dict().items()}
    ref.load_state_dict(state, strict=True)


def _optimizer_args(cfg) -> tuple[float, float, dict, float]:
    opt = dict(cfg.optim_wrapper.optimizer)
    if opt.pop('type') != 'AdamW':
        raise ValueError('the fine-tuning benchmark expects the recipe optimiser AdamW')
    lr, wd = float(opt.pop('lr')), float(opt.pop('weight_decay', 0.0))
    return lr, wd, opt, float(cfg.optim_wrapper.paramwise_cfg.get('layer_decay_rate', 1.0))


def ours_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """The optimiser our training builds: ``LayerDecayConstructor`` with the config's ``paramwise_cfg`` and AdamW."""
    from sdae_suite.backbones.layer_decay import LayerDecayConstructor

    wrapper_cfg = dict(type='OptimWrapper', optimizer=dict(cfg.optim_wrapper.optimizer))
    return LayerDecayConstructor(wrapper_cfg, dict(cfg.optim_wrapper.paramwise_cfg))(model).optimizer


def timm_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """MAE's setup for the timm model: ``param_groups_layer_decay`` (no decay on 1-D tensors and ``no_weight_decay()``)
    with each group's lr = base lr x its layer scale, and the same AdamW arguments."""
    from timm.optim import param_groups_layer_decay

    lr, wd, kwargs, decay = _optimizer_args(cfg)
    groups = param_groups_layer_decay(model, weight_decay=wd, no_weight_decay_list=model.no_weight_decay(),
                                      layer_decay=decay)
    for g in groups:
        g['lr'] = lr * g['lr_scale']
    return torch.optim.AdamW(groups, lr=lr, weight_decay=wd, **kwargs)


def param_settings(optimizer: torch.optim.Optimizer, model: nn.Module, prefix: str = '') -> dict[str, tuple]:
    """{parameter name without ``prefix``: (lr, weight decay)} as the optimiser will apply them."""
    names = {id(p): n.removeprefix(prefix) for n, p in model.named_parameters()}
    return {names[id(p)]: (round(g['lr'], 12), g['weight_decay']) for g in optimizer.param_groups for p in g['params']}


class Stepper:
    """One model with its optimiser and loss: ``step(x, y)`` is one training iteration on a batch (which it may modify
    in place) and its labels."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], device: torch.device, dtype: str):
        self.model, self.optimizer, self.loss, self.device = model, optimizer, loss, device
        amp = {'fp32': None, 'bf16': torch.bfloat16}[dtype]
        self.autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else nullcontext
        self.last_loss = float('nan')

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with self.autocast():
            loss = self.loss(x, y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.last_loss = loss.detach()


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class FinetunePair:
    """Ours and timm's, same weights, same batch; ``run(name, seed)`` times one step of one of them."""

    def __init__(self, spec: FinetuneSpec, seed: int = 0):
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy

        if spec.batch % 2:
            raise ValueError(f'Mixup needs an even batch, got {spec.batch}')
        self.spec, self.device = spec, torch.device(spec.device)
        cfg = load_recipe(spec.config)
        torch.manual_seed(seed)
        ours = build_ours(spec, cfg).to(self.device).train()
        ref = build_timm(spec).to(self.device).train()
        copy_weights(ours, ref)
        mixup = Mixup(**_mixup_args(cfg, spec.num_classes))
        criterion = SoftTargetCrossEntropy()

        def ours_loss(x, y):
            return ours(x, dict(label=y), mode='loss')['loss']

        def timm_loss(x, y):
            x, target = mixup(x, y)
            return criterion(ref(x), target)

        self.steppers = {OURS: Stepper(ours, ours_optimizer(ours, cfg), ours_loss, self.device, spec.dtype),
                         REFERENCE: Stepper(ref, timm_optimizer(ref, cfg), timm_loss, self.device, spec.dtype)}
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(spec.batch, 3, spec.img_size, spec.img_size, generator=g).to(self.device)
        self.y = torch.randint(0, spec.num_classes, (spec.batch,), generator=g).to(self.device)

    def _seed(self, seed: int) -> None:
        np.random.seed(seed)      # Mixup: lambda, mixup or cutmix, the box
        torch.manual_seed(seed)   # drop path

    def run(self, name: str, seed: int) -> tuple[float, float]:
        """One step of ``name`` on a fresh copy of the batch (Mixup works in place): (wall s, process CPU s)."""
        self._seed(seed)
        x = self.x.clone()
        _sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        self.steppers[name].step(x, self.y)
        _sync(self.device)
        return time.perf_counter() - t0, time.process_time() - c0

    def flops(self, name: str) -> int:
        self._seed(0)
        return count_flops(lambda: self.steppers[name].step(self.x.clone(), self.y))


def _mixup_args(cfg, num_classes: int) -> dict:
    return dict(cfg.model.mixup, num_classes=num_classes)


def finetune_step_flops(spec: FinetuneSpec) -> int:
    """Closed form of one step's FLOPs (forward + backward, 2 FLOPs per multiply-accumulate), as ``count_flops`` counts
    them: the encoder (``vit_forward_flops`` on 1 + L tokens) and the head matmul cost 3x their forward (forward,
    input gradient, weight gradient); the patch projection 2x (no gradient w.r.t. the images)."""
    a = spec.arch
    patches = math.ceil(spec.img_size / spec.patch_size) ** 2
    encoder = vit_forward_flops(1 + patches, a['embed_dim'], a['depth'])
    patch_embed = 2 * patches * 3 * spec.patch_size ** 2 * a['embed_dim']
    head = 2 * a['embed_dim'] * spec.num_classes
    return spec.batch * (3 * (encoder + head) + 2 * patch_embed)


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def measure(spec: FinetuneSpec, rounds: int = 10, warmup: int = 2, threads: int | None = None, flops: bool = True,
            log: Callable[[str], None] = print) -> dict:
    """Time ours against timm's, interleaved; ratio = ours / timm (< 1: ours faster). ``flops``: count each step's
    FLOPs once (one extra step per model; attention on the math backend). ``threads``: torch's thread count during the
    measurement; the caller's is put back after it (a process that goes on computing must not change numerics)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _measure(spec, rounds, warmup, flops, log)
    finally:
        torch.set_num_threads(before)


def _measure(spec: FinetuneSpec, rounds: int, warmup: int, flops: bool, log: Callable[[str], None]) -> dict:
    from .vitdet_speed import cpu_name

    load_before = load_average()
    pair = FinetunePair(spec)
    dev = pair.device
    names = [OURS, REFERENCE]
    walls: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            wall, cpu = pair.run(name, seed=r)
            if r >= warmup:
                walls[name].append(wall)
                cpus[name].append(cpu)
        if r >= warmup:
            log(f'[bench-ft] round {r - warmup + 1}/{rounds}: ' + ', '.join(
                f'{n} {walls[n][-1] * 1e3:.0f} ms (cpu {cpus[n][-1] * 1e3:.0f})' for n in names))
        else:
            log(f'[bench-ft] warm-up round {r + 1}/{warmup}')
    clock = 'process cpu' if dev.type == 'cpu' else 'wall'
    headline = cpus if clock == 'process cpu' else walls
    rows = {}
    for n in names:
        rows[n] = dict(median_ms=statistics.median(headline[n]) * 1e3,
                       wall_median_ms=statistics.median(walls[n]) * 1e3,
                       cpu_median_ms=statistics.median(cpus[n]) * 1e3,
                       wall_s=walls[n], cpu_s=cpus[n],
                       img_per_s=spec.batch / statistics.median(walls[n]),
                       loss=float(pair.steppers[n].last_loss))
    if flops:
        for n in names:
            rows[n]['flops_per_step'] = pair.flops(n)
            rows[n]['tflops_wall'] = rows[n]['flops_per_step'] / (rows[n]['wall_median_ms'] / 1e3) / 1e12

    def ratios(series: dict[str, list[float]]) -> dict:
        per_round = [a / b for a, b in zip(series[OURS], series[REFERENCE], strict=True)]
        return dict(ratio_of_medians=statistics.median(series[OURS]) / statistics.median(series[REFERENCE]),
                    median_of_ratios=statistics.median(per_round))

    machine = (f'{cpu_name()} ({torch.get_num_threads()} threads)' if dev.type == 'cpu'
               else torch.cuda.get_device_name(dev)) + f', torch {torch.__version__}'
    return dict(spec=asdict(spec), rounds=rounds, warmup=warmup, clock=clock, threads=torch.get_num_threads(),
                machine=machine, cpu_count=os.cpu_count(), load_avg_before=load_before, load_avg_after=load_average(),
                models=rows, ours_over_timm=ratios(headline)['median_of_ratios'], ratio=ratios(headline),
                ratio_wall=ratios(walls), ratio_cpu=ratios(cpus), target=OURS_OVER_TIMM_TARGET,
                flops_closed_form=finetune_step_flops(spec))


def format_step(result: dict) -> str:
    s = result['spec']
    lines = [f"fine-tuning step, ViT-{s['size']}/{s['patch_size']} at {s['img_size']} px, batch {s['batch']}, "
             f"{s['dtype']}, {result['machine']}; {result['rounds']} rounds after {result['warmup']} warm-up; load "
             f"average {result['load_avg_before']} before, {result['load_avg_after']} after "
             f"({result['cpu_count']} CPUs)",
             f"{'model':<10} {'median ms/step':>15} {'wall ms':>9} {'cpu ms':>9} {'img/s':>7} {'GFLOP/step':>11}"]
    for name, r in result['models'].items():
        gflop = f"{r['flops_per_step'] / 1e9:>11.1f}" if 'flops_per_step' in r else f"{'-':>11}"
        lines.append(f"{name:<10} {r['median_ms']:>15.1f} {r['wall_median_ms']:>9.1f} {r['cpu_median_ms']:>9.1f} "
                     f"{r['img_per_s']:>7.2f} {gflop}")
    ratio = result['ours_over_timm']
    verdict = 'OK' if ratio <= result['target'] else 'ABOVE the target'
    lines.append(f"ours / timm: x{ratio:.3f} (median of per-round ratios, {result['clock']} time; ratio of medians "
                 f"x{result['ratio']['ratio_of_medians']:.3f}; wall x{result['ratio_wall']['median_of_ratios']:.3f}) "
                 f"-> {verdict} (target <= {result['target']})")
    return '\n'.join(lines)


# ---- data pipeline ----

def make_jpegs(root: str | Path, count: int, size: tuple[int, int] = JPEG_SIZE, classes: int = 4, seed: int = 0,
               quality: int = 92) -> list[Path]:
    """``count`` photo-like JPEGs in ``root/train/c<k>/``: a smooth random colour field, a few filled shapes, a
    mid-frequency luminance texture and Gaussian noise (luminance sigma 14, colour sigma ~5), so that they compress to
    ImageNet's mean file size (~110 KB at 500 x 375, quality 92) and decode at a photo's cost."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    paths = []
    for i in range(count):
        field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        draw = ImageDraw.Draw(field)
        for _ in range(int(rng.integers(3, 9))):
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            box = (x0, y0, x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        texture = Image.fromarray(rng.integers(0, 256, (h // 4, w // 4), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        pixels = (np.asarray(field, dtype=np.float32) + 0.6 * (np.asarray(texture, dtype=np.float32)[..., None] - 128)
                  + rng.normal(0, 14, (h, w, 1)) + rng.normal(0, 14 / 3, (h, w, 3)))
        path = Path(root) / 'train' / f'c{i % classes}' / f'img_{i:05d}.JPEG'
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=quality)
        paths.append(path)
    return paths


def recipe_transform(config: str | Path = FINETUNE_CONFIG) -> dict:
    """The training transform of the recipe's dataset (``train_dataloader.dataset.transform``)."""
    return dict(load_recipe(config).train_dataloader.dataset.transform)


def pipeline_throughput(root: str | Path | None = None, num_images: int = 256, rounds: int = 3, warmup: int = 16,
                        transform: dict | None = None, seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """Images/s of one DataLoader worker's work (``SdAEImageFolder.__getitem__``: JPEG decode, RGB, the transform) in
    this process with one torch thread. ``root``: an ImageNet-format folder with ``train/``; None generates
    ``num_images`` JPEGs (:func:`make_jpegs`) in a temporary folder. Median over ``rounds`` passes over the images."""
    from sdae_suite.classification.dataset import SdAEImageFolder

    transform = transform or recipe_transform()
    with tempfile.TemporaryDirectory() as tmp:
        if root is None:
            root = tmp
            make_jpegs(root, num_images, seed=seed)
        ds = SdAEImageFolder(str(root), 'train', transform=transform)
        sizes = [os.path.getsize(p) for p, _ in ds.samples]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # what torch's DataLoader worker loop sets
        load_before = load_average()
        try:
            torch.manual_seed(seed)
            for i in range(min(warmup, len(ds))):
                ds[i]
            walls, cpus, errors = [], [], collections.Counter()
            sample = None
            for r in range(rounds):
                t0, c0 = time.perf_counter(), time.process_time()
                for i in range(len(ds)):
                    try:
                        sample = ds[i]
                    except Exception as e:  # noqa: BLE001  (counted and reported: in training it ends the run)
                        errors[f'{type(e).__name__}: {e}'] += 1
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
                log(f'[bench-data] pass {r + 1}/{rounds}: {len(ds) / cpus[-1]:.1f} img/s on CPU time, '
                    f'{len(ds) / walls[-1]:.1f} on wall time')
            if errors:
                log(f'[bench-data] WARNING: the transform raised on {sum(errors.values())} of {rounds * len(ds)} '
                    f'samples (a DataLoader worker that raises ends a training run): {dict(errors)}')
        finally:
            torch.set_num_threads(threads)
        shape = list(sample['inputs'].shape) if sample is not None else None
    n = len(sizes)
    return dict(images=n, jpeg_size=list(JPEG_SIZE) if root == tmp else None, mean_jpeg_kb=sum(sizes) / n / 1024,
                transform=transform, output_shape=shape, rounds=rounds, transform_errors=dict(errors),
                samples=rounds * n, clock='process cpu',
                img_per_s=n / statistics.median(cpus), img_per_s_wall=n / statistics.median(walls),
                ms_per_img=statistics.median(cpus) / n * 1e3, pass_cpu_s=cpus, pass_wall_s=walls,
                load_avg_before=load_before, load_avg_after=load_average(), machine=_cpu())


def _cpu() -> str:
    from .vitdet_speed import cpu_name

    return cpu_name()


def workers_needed(gpu_img_per_s: float, worker_img_per_s: float, gpus: int = GPUS_PER_NODE) -> dict:
    """DataLoader workers that feed ``gpus`` GPUs each training at ``gpu_img_per_s`` when one worker produces
    ``worker_img_per_s``: every rank runs its own workers, so per rank ceil(gpu / worker), per node gpus x that.
    No headroom is added; the main process's collation and host-to-device copy are not counted."""
    if gpu_img_per_s <= 0 or worker_img_per_s <= 0 or gpus <= 0:
        raise ValueError('throughputs and the GPU count must be positive')
    per_gpu = math.ceil(gpu_img_per_s / worker_img_per_s - 1e-9)
    return dict(gpu_img_per_s=gpu_img_per_s, worker_img_per_s=worker_img_per_s, gpus=gpus,
                node_img_per_s=gpus * gpu_img_per_s, workers_exact=gpus * gpu_img_per_s / worker_img_per_s,
                workers_per_gpu=per_gpu, workers_per_node=gpus * per_gpu)


def format_pipeline(result: dict, estimates: Sequence[dict]) -> str:
    lines = [f"data pipeline ({result['images']} JPEGs, mean {result['mean_jpeg_kb']:.0f} KB; decode + "
             f"{result['transform'].get('type')} transform {result['transform'].get('auto_augment')}, 1 torch "
             f"thread, {result['machine']}; load average {result['load_avg_before']} before, "
             f"{result['load_avg_after']} after): "
             f"{result['img_per_s']:.1f} img/s per worker on CPU time ({result['ms_per_img']:.2f} ms/img), "
             f"{result['img_per_s_wall']:.1f} on wall time"]
    if result.get('transform_errors'):
        lines.append(f"WARNING: the transform raised on {sum(result['transform_errors'].values())} of "
                     f"{result['samples']} samples: {result['transform_errors']}")
    for e in estimates:
        lines.append(f"{e['gpus']} GPUs x {e['gpu_img_per_s']:.0f} img/s = {e['node_img_per_s']:.0f} img/s -> "
                     f"{e['workers_per_gpu']} workers per GPU (num_workers), {e['workers_per_node']} per node "
                     f"({e['workers_exact']:.1f} exactly)")
    return '\n'.join(lines)
