"""`make gpu-check`: every CUDA path of the suite exercised once, with figures, in one short command.

Tier 1 (no mmcv CUDA ops needed):
- the SdAE and MAE ViT-B/16 pretraining step in bf16 at a batch that fills the GPU: step time, images/s, FLOPs
  (torch.utils.flop_counter, attention counted on the math backend), TFLOP/s and MFU against the GPU's bf16 dense peak
  (BF16_DENSE_PEAK_TFLOPS by device name) and against a bf16 matmul measured in the same run; SdAE/MAE step ratio;
- the ImageNet fine-tuning step (our ``SdAEImageClassifier``, ViT-B/16 at 224 px: Mixup, forward, soft-target loss,
  backward, AdamW on the layer-decay groups) in bf16 at the same batch: step time, images/s, FLOPs counted the same way,
  TFLOP/s and MFU; and timm's ``vit_base_patch16_224`` doing the same step, interleaved: ours / timm step ratio
  (target <= 1.02; benchmarks/finetune_speed.py);
- the same SdAE step in fp16 with dynamic loss scaling;
- fused attention: the kernels the profiler sees in the encoder's forward are flash or memory-efficient SDPA ones;
- a 1-process NCCL torchrun pretraining of a few iterations with checkpoints, then a second run resumed from its
  first-epoch checkpoint: its losses must equal the uninterrupted run's on the same iterations;
- a non-finite loss under fp16 stops the step with the suite's NonFiniteLossError.
Tier 2 (``--tier2``; needs mmcv built with CUDA ops, which ``tools/install.sh`` does when nvcc and a GPU are present):
a few iterations of the demo Mask R-CNN and UperNet with ``--amp`` on the GPU, and their test stage.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sdae_suite import REPO_ROOT
from sdae_suite.contracts import TEST_RESULTS_FILE
from sdae_suite.engine.atomic import atomic_write_json, atomic_write_text

ROOT = REPO_ROOT
MFU_TARGET = 0.40
SDAE_OVER_MAE_TARGET = 1.45


@dataclass
class Check:
    name: str
    ok: bool
    figure: str
    details: dict = field(default_factory=dict)


def run_check(name: str, fn: Callable[[], tuple[bool, str, dict]]) -> Check:
    """A check that raises is a FAIL with the exception as its figure; the remaining checks still run."""
    t = time.perf_counter()
    try:
        ok, figure, details = fn()
    except Exception as e:  # noqa: BLE001  (every failure must land in the table, whatever it is)
        ok, figure, details = False, f'{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ""}', {}
    details = dict(details, seconds=round(time.perf_counter() - t, 1))
    print(f"[gpu-check] {'PASS' if ok else 'FAIL'}  {name}: {figure}", flush=True)
    return Check(name, ok, figure, details)


def format_table(checks: list[Check]) -> str:
    width = max([len(c.name) for c in checks] + [5])
    lines = [f"{'check':<{width}}  result  figure", '-' * (width + 60)]
    lines += [f"{c.name:<{width}}  {'PASS' if c.ok else 'FAIL':<6}  {c.figure}" for c in checks]
    failed = sum(not c.ok for c in checks)
    lines.append(f'{len(checks) - failed}/{len(checks)} checks passed' + (f', {failed} FAILED' if failed else ''))
    return '\n'.join(lines)


def markdown_table(checks: list[Check]) -> str:
    rows = ['| check | result | figure |', '|---|---|---|']
    rows += [f"| {c.name} | {'PASS' if c.ok else 'FAIL'} | {c.figure} |" for c in checks]
    return '\n'.join(rows)


# ---- tier 1 ----

def step_throughput(spec, repeats: int = 5) -> dict:
    """Median step time and FLOPs of one pretraining variant (a benchmarks.speed.StepSpec)."""
    from .speed import Bench

    bench = Bench(spec)
    for _ in range(2):
        bench.step()  # warm-up: cuBLAS/cuDNN heuristics, allocator
    flops = bench.flops()
    times = sorted(bench.timed(2) for _ in range(repeats))
    step = times[len(times) // 2]
    return dict(step_time_s=step, img_per_s=spec.batch / step, flops_per_step=flops, tflops=flops / step / 1e12,
                loss=float(bench.last_loss))


def check_step_mfu(batch: int, device: str = 'cuda', peak_n: int | None = None, repeats: int = 5,
                   **spec: object) -> tuple[list[Check], dict]:
    """The SdAE and MAE steps (ViT-B/16 at 224 px unless ``spec`` says otherwise) and their MFU."""
    from .hardware import known_bf16_peak, measured_matmul_peak, mfu
    from .speed import StepSpec

    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'
    measured = measured_matmul_peak(dev, n=peak_n)
    known = known_bf16_peak(name)
    peak, source = (known[0], f'{known[1]} data sheet') if known else (measured, 'measured matmul')
    rows: dict[str, dict] = {}
    checks = []
    for variant in ('sdae', 'mae'):
        def one(variant=variant):
            r = step_throughput(StepSpec(variant=variant, batch=batch, device=device,
                                         dtype='bf16' if dev.type == 'cuda' else 'fp32', **spec), repeats)
            r.update(mfu=mfu(r['flops_per_step'], r['step_time_s'], peak),
                     of_measured_matmul=mfu(r['flops_per_step'], r['step_time_s'], measured))
            rows[variant] = r
            ok = variant != 'sdae' or r['mfu'] >= MFU_TARGET
            return ok, (f"{r['step_time_s'] * 1e3:.0f} ms/step, {r['img_per_s']:.0f} img/s, "
                        f"{r['flops_per_step'] / 1e12:.2f} TFLOP/step, {r['tflops']:.0f} TFLOP/s, MFU {r['mfu']:.1%} "
                        f"(peak {peak / 1e12:.0f} from {source}; {r['of_measured_matmul']:.1%} of the measured "
                        f"matmul {measured / 1e12:.0f})"
                        + (f', target >= {MFU_TARGET:.0%}' if variant == 'sdae' else '')), r
        checks.append(run_check(f'{variant} step, batch {batch}', one))
    if 'sdae' in rows and 'mae' in rows:
        ratio = rows['sdae']['step_time_s'] / rows['mae']['step_time_s']
        flop_ratio = rows['sdae']['flops_per_step'] / rows['mae']['flops_per_step']
        checks.append(Check('SdAE / MAE step time', ratio <= SDAE_OVER_MAE_TARGET,
                            f'x{ratio:.2f} (FLOPs x{flop_ratio:.2f}; target <= {SDAE_OVER_MAE_TARGET})',
                            dict(step_ratio=ratio, flop_ratio=flop_ratio)))
    return checks, dict(device=name, peak_tflops=peak / 1e12, peak_source=source,
                        measured_matmul_tflops=measured / 1e12, variants=rows)


def check_finetune_step(batch: int, device: str = 'cuda', rounds: int = 5, warmup: int = 2, peak: float | None = None,
                        measured: float | None = None, peak_source: str | None = None, peak_n: int | None = None,
                        **spec: object) -> tuple[list[Check], dict]:
    """The fine-tuning step of our classifier (ViT-B/16 at 224 px unless ``spec`` says otherwise) and of timm's ViT,
    interleaved: img/s, FLOPs (forward + backward, attention counted), TFLOP/s and MFU of ours, and ours / timm.
    ``peak`` / ``measured``: FLOP/s of the data-sheet and measured matmul peaks (found here when not given)."""
    from .finetune_speed import OURS, OURS_OVER_TIMM_TARGET, REFERENCE, FinetuneSpec, measure
    from .hardware import known_bf16_peak, measured_matmul_peak, mfu

    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'
    if measured is None:
        measured = measured_matmul_peak(dev, n=peak_n)
    if peak is None:
        known = known_bf16_peak(name)
        peak, peak_source = (known[0], f'{known[1]} data sheet') if known else (measured, 'measured matmul')
    figures: dict = {}

    def step() -> tuple[bool, str, dict]:
        r = measure(FinetuneSpec(batch=batch, device=device, dtype='bf16' if dev.type == 'cuda' else 'fp32', **spec),
                    rounds=rounds, warmup=warmup, log=lambda m: None)
        figures.update(r)
        ours = r['models'][OURS]
        t = ours['wall_median_ms'] / 1e3
        flops = ours['flops_per_step']
        ours.update(mfu=mfu(flops, t, peak), of_measured_matmul=mfu(flops, t, measured))
        ok = bool(torch.isfinite(torch.tensor(ours['loss'])))
        return ok, (f"{ours['wall_median_ms']:.0f} ms/step, {ours['img_per_s']:.0f} img/s, {flops / 1e12:.2f} "
                    f"TFLOP/step, {flops / t / 1e12:.0f} TFLOP/s, MFU {ours['mfu']:.1%} (peak {peak / 1e12:.0f} from "
                    f"{peak_source}; {ours['of_measured_matmul']:.1%} of the measured matmul {measured / 1e12:.0f}); "
                    f"loss {ours['loss']:.4f}"), ours

    checks = [run_check(f'fine-tune step, batch {batch}', step)]
    if figures:
        ref = figures['models'][REFERENCE]
        ratio = figures['ratio_wall']['median_of_ratios']
        checks.append(Check('fine-tune step ours / timm', ratio <= OURS_OVER_TIMM_TARGET,
                            f"x{ratio:.3f} (timm {ref['wall_median_ms']:.0f} ms/step, median of {rounds} interleaved "
                            f'rounds; target <= {OURS_OVER_TIMM_TARGET})', dict(ratio=ratio)))
    return checks, dict(figures, peak_tflops=peak / 1e12, peak_source=peak_source,
                        measured_matmul_tflops=measured / 1e12)


def check_fp16(batch: int, device: str = 'cuda', **spec: object) -> tuple[bool, str, dict]:
    from .speed import Bench, StepSpec

    bench = Bench(StepSpec(variant='sdae', batch=batch, device=device, dtype='fp16', **spec))
    losses = []
    for _ in range(4):
        bench.step()
        losses.append(float(bench.last_loss))
    scale = bench.scaler.get_scale()
    ok = all(map(torch.isfinite, map(torch.tensor, losses))) and scale > 0
    return ok, f'4 steps, losses {losses[0]:.4f} -> {losses[-1]:.4f}, loss scale {scale:g}', dict(losses=losses)


FUSED_KERNEL_MARKERS = ('flash', 'fmha', 'efficient_attention', 'mem_eff', 'cudnn_attention', 'sdpa_cudnn')


def attention_kernels(model: torch.nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the attention-looking kernels the profiler records in one bf16 forward of ``model``."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16), profile(activities=[ProfilerActivity.CUDA,
                                                                                            ProfilerActivity.CPU]) as p:
        model(x)
        torch.cuda.synchronize()
    names = {e.name for e in p.events()}
    return sorted(n for n in names if 'attention' in n.lower() or 'fmha' in n.lower() or 'flash' in n.lower())


def uses_fused_attention(kernel_names: list[str]) -> bool:
    low = [n.lower() for n in kernel_names]
    return any(m in n for n in low for m in FUSED_KERNEL_MARKERS) and not any('_math' in n for n in low)


def check_fused_attention(device: str = 'cuda') -> tuple[bool, str, dict]:
    from sdae_suite.backbones.vit import VisionTransformer

    vit = VisionTransformer(img_size=224, patch_size=16, embed_dim=768, depth=2, num_heads=12).to(device).eval()
    names = attention_kernels(vit, torch.randn(8, 3, 224, 224, device=device))
    ok = uses_fused_attention(names)
    return ok, ('fused SDPA kernel in use: ' if ok else 'no fused SDPA kernel seen: ') + ', '.join(names[:3]), \
        dict(kernels=names)


TINY_PRETRAIN = """
_base_ = ['{root}/pretrain/configs/sdae_vit-tiny-p8_demo.py']
img_size = 32
model = dict(encoder=dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2),
             decoder=dict(embed_dim=64, depth=1, num_heads=2))
train_dataloader = dict(batch_size=8, num_workers=2, dataset=dict(data_root='{data}', img_size=32))
warmup_epochs = 1
train_cfg = dict(max_epochs=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(max_keep_ckpts=2))
log_processor = dict(window_size=1)
amp = True
"""


def _last_line(proc: subprocess.CompletedProcess) -> str:
    """The line that says why a child failed: our tools' own 'FAILED' line, else the last line that is not a rule
    (torchrun ends its error report with a row of '=')."""
    lines = [ln for ln in (proc.stderr or proc.stdout or '').strip().splitlines() if ln.strip(' =')]
    if not lines:
        return f'exit code {proc.returncode}'
    return next((ln for ln in reversed(lines) if 'FAILED' in ln), lines[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _losses(work_dir: Path) -> dict[int, float]:
    """Training loss per iteration from mmengine's scalars.json files of a work dir."""
    out = {}
    for f in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            if 'loss' in rec and 'iter' in rec:
                out[int(rec['iter'])] = float(rec['loss'])
    return out


def resumed_matches(full: dict[int, float], resumed: dict[int, float], rtol: float = 1e-3) -> tuple[bool, float]:
    """Does a run resumed from a checkpoint reproduce the uninterrupted run's losses on the iterations it ran? GPU
    kernels are not bit-deterministic (atomics in attention backward), so the comparison has a tolerance; the largest
    relative difference is reported."""
    if not resumed or not set(resumed) <= set(full):
        return False, float('inf')
    worst = max(abs(full[i] - v) / max(abs(full[i]), 1e-12) for i, v in resumed.items())
    return worst <= rtol, worst


def check_torchrun_resume(python: str = sys.executable) -> tuple[bool, str, dict]:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        g = torch.Generator().manual_seed(0)
        for i in range(32):
            (tmp / 'data' / f'c{i % 2}').mkdir(parents=True, exist_ok=True)
            Image.fromarray(torch.randint(0, 256, (40, 40, 3), generator=g, dtype=torch.uint8).numpy()).save(
                tmp / 'data' / f'c{i % 2}' / f'{i}.png')
        cfg = tmp / 'tiny.py'
        cfg.write_text(TINY_PRETRAIN.format(root=ROOT, data=tmp / 'data'))
        env = dict(os.environ, OMP_NUM_THREADS='1')

        def pretrain(work: Path, *extra: str) -> None:
            # torchrun itself (tools/pretrain.sh runs a single GPU as a plain process): the NCCL path users take
            proc = subprocess.run([python, '-m', 'torch.distributed.run', '--nproc_per_node=1',
                                   f'--master_port={_free_port()}', 'tools/pretrain.py', str(cfg), '--launcher',
                                   'pytorch', '--work-dir', str(work), *extra], env=env, capture_output=True,
                                  text=True, timeout=600, cwd=ROOT)
            if proc.returncode:
                raise RuntimeError(f'torchrun pretraining failed: {_last_line(proc)}')
            if 'world size 1' not in proc.stdout:
                raise RuntimeError('the torchrun process did not report world size 1')

        pretrain(tmp / 'full')
        pretrain(tmp / 'resumed', '--resume', str(tmp / 'full' / 'epoch_1.pth'))
        full, resumed = _losses(tmp / 'full'), _losses(tmp / 'resumed')
        ok, worst = resumed_matches(full, resumed)
        ok = ok and (tmp / 'resumed' / 'epoch_2.pth').is_file()
        return ok, (f'1 process: {len(full)} iterations, checkpoints written; resumed from epoch_1.pth, its '
                    f'{len(resumed)} iterations within {worst:.1e} (relative) of the uninterrupted run'), \
            dict(max_rel_diff=worst, full=full, resumed=resumed)


def check_nonfinite_fp16(device: str = 'cuda') -> tuple[bool, str, dict]:
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    from sdae_suite.pretrain.model import MaskedPretrainer, NonFiniteLossError

    model = MaskedPretrainer(encoder=dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2),
                             decoder=dict(embed_dim=64, depth=1, num_heads=2)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # AmpOptimWrapper exists for accelerators only; on CPU (the unit test) the plain wrapper takes the same path
    wrapper = (AmpOptimWrapper(optimizer=optimizer, dtype='float16', loss_scale='dynamic') if device == 'cuda'
               else OptimWrapper(optimizer=optimizer))
    with torch.no_grad():
        model.encoder.patch_embed.proj.weight.fill_(float('inf'))
    before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    try:
        model.train_step(dict(inputs=torch.rand(4, 3, 32, 32, device=device)), wrapper)
    except NonFiniteLossError as e:
        untouched = all(torch.equal(before[k], v) for k, v in model.decoder.state_dict().items())
        return untouched, f'stopped before the step: "{str(e)[:60]}..."', {}
    return False, 'a non-finite loss under fp16 did not stop the step', {}


# ---- tier 2 ----

def check_finetune(config: str, python: str = sys.executable) -> tuple[bool, str, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        common = ['--cfg-options', 'train_cfg.max_iters=4', 'train_cfg.val_interval=4']
        t = time.perf_counter()
        train = subprocess.run([python, 'tools/train.py', config, '--amp', '--work-dir', tmp, *common], env=env,
                               capture_output=True, text=True, timeout=900, cwd=ROOT)
        if train.returncode:
            raise RuntimeError(f'train failed: {_last_line(train)}')
        if 'device: cuda' not in train.stdout:
            raise RuntimeError('tools/train.py did not run on the GPU')
        ckpt = Path(tmp) / 'iter_4.pth'
        test = subprocess.run([python, 'tools/test.py', config, str(ckpt)], env=env, capture_output=True, text=True,
                              timeout=600, cwd=ROOT)
        if test.returncode:
            raise RuntimeError(f'test failed: {_last_line(test)}')
        metrics = json.loads((Path(tmp) / TEST_RESULTS_FILE).read_text())['metrics']
        return True, f'4 iterations with --amp + test in {time.perf_counter() - t:.0f} s; {len(metrics)} metrics', \
            dict(metrics=metrics)


def main(tier2: bool = False, batch: int = 128, out: str | Path = 'work_dirs/gpu_check') -> int:
    if not torch.cuda.is_available():
        print('[gpu-check] no CUDA GPU on this machine: nothing to check (exit 0)')
        return 0
    print(f'[gpu-check] {torch.cuda.get_device_name()} | torch {torch.__version__} (CUDA {torch.version.cuda}) | '
          f'tier 1{" + tier 2" if tier2 else ""}', flush=True)
    checks, figures = check_step_mfu(batch)
    ft_checks, figures['finetune'] = check_finetune_step(batch, peak=figures['peak_tflops'] * 1e12,
                                                         measured=figures['measured_matmul_tflops'] * 1e12,
                                                         peak_source=figures['peak_source'])
    checks += ft_checks
    checks.append(run_check('SdAE step in fp16 + loss scaling', lambda: check_fp16(batch)))
    checks.append(run_check('fused attention (SDPA) kernel', check_fused_attention))
    checks.append(run_check('torchrun NCCL pretraining + exact resume', check_torchrun_resume))
    checks.append(run_check('non-finite loss under fp16 stops', check_nonfinite_fp16))
    if tier2:
        for cfg in ('det_configs/sdae_maskrcnn_demo.py', 'seg_configs/sdae_upernet_demo.py'):
            checks.append(run_check(f'{Path(cfg).stem} --amp train + test', lambda cfg=cfg: check_finetune(cfg)))
    print('\n' + format_table(checks))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(dict(figures=figures, checks=[asdict(c) for c in checks]), out / 'results.json')
    atomic_write_text(markdown_table(checks) + '\n', out / 'results.md')
    print(f'[gpu-check] wrote {out}/results.json and results.md')
    return 0 if all(c.ok for c in checks) else 1
