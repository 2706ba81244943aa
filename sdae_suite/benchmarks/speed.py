"""Pretraining step cost of SdAE, MAE and SdAE with a full-image teacher, measured in ONE process, interleaved.

A step is what training does per iteration: forward, backward, AdamW step and (SdAE) the EMA teacher update, on a
fixed synthetic batch (no data loading). Reported per variant: median step time, images/s, peak memory (GPU: allocator
peak; CPU: the high-water RSS of a fresh process running two steps, minus its RSS before them), FLOPs per step
(forward + backward, attention included) and the achieved FLOP/s as a fraction of the machine's median matmul peak.
"""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.optim import param_groups_weight_decay

from sdae_suite import REPO_ROOT
from sdae_suite.engine.atomic import atomic_write_json
from sdae_suite.pretrain.hooks import ema_update
from sdae_suite.pretrain.model import MaskedPretrainer

from .hardware import count_flops, measured_matmul_peak

SIZES = {  # embed_dim, depth, heads
    'test': (32, 2, 2), 'tiny': (192, 12, 3), 'small': (384, 12, 6), 'base': (768, 12, 12), 'large': (1024, 24, 16)}
VARIANTS = {
    'sdae': dict(objective='sdae', teacher_view='folds'),
    'mae': dict(objective='mae'),
    'sdae_full_teacher': dict(objective='sdae', teacher_view='full', cos_dim='channels'),  # official full-view loss
}
OPTIMIZERS = ('fused', 'foreach', 'for-loop')  # torch.optim.AdamW implementations


def adamw_impl(name: str) -> dict:
    """AdamW keyword arguments for one implementation. 'fused' is the default of the suite's configs wherever torch has
    the kernel (CPU and CUDA): one kernel over all parameters instead of several per tensor."""
    if name == 'fused':
        return dict(fused=True)
    if name == 'foreach':
        return dict(foreach=True)
    return dict(foreach=False)


@dataclass
class StepSpec:
    variant: str = 'sdae'
    size: str = 'base'
    img_size: int = 224
    patch_size: int = 16
    decoder: str = '8x512x16'  # depth x width x heads
    mask_ratio: float = 0.75
    batch: int = 8
    device: str = 'cpu'
    dtype: str = 'fp32'     # fp32 | bf16 | fp16 (fp16 with dynamic loss scaling, as training does)
    optimizer: str = 'fused'

    @property
    def label(self) -> str:
        return self.variant + ('' if self.optimizer == 'fused' else f'[{self.optimizer}]') + \
            ('' if self.dtype == 'fp32' else f'({self.dtype})')


class Bench:
    """One variant: model, optimizer and a step closure on a fixed batch."""

    def __init__(self, spec: StepSpec):
        d, depth, heads = SIZES[spec.size]
        dd, dw, dh = (int(v) for v in spec.decoder.split('x'))
        self.spec, self.device = spec, torch.device(spec.device)
        self.model = MaskedPretrainer(
            encoder=dict(img_size=spec.img_size, patch_size=spec.patch_size, embed_dim=d, depth=depth, num_heads=heads,
                         drop_path_rate=0.1),
            decoder=dict(embed_dim=dw, depth=dd, num_heads=dh), mask_ratio=spec.mask_ratio, **VARIANTS[spec.variant],
        ).to(self.device).train()
        groups = param_groups_weight_decay(self.model, 0.05)
        self.opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), **adamw_impl(spec.optimizer))
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(spec.batch, 3, spec.img_size, spec.img_size, generator=g).to(self.device)
        dtype = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[spec.dtype]
        self.autocast = torch.autocast(self.device.type, dtype=dtype) if dtype else nullcontext()
        self.scaler = torch.amp.GradScaler(self.device.type) if spec.dtype == 'fp16' else None
        self.last_loss = float('nan')

    def step(self) -> None:
        with self.autocast:
            loss = self.model(self.x, mode='loss')['loss']
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.model.teacher is not None:
            ema_update(self.model.teacher, self.model.encoder, 0.996)
        self.last_loss = loss.detach()

    def sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def timed(self, steps: int) -> float:
        self.sync()
        t = time.perf_counter()
        for _ in range(steps):
            self.step()
        self.sync()
        return (time.perf_counter() - t) / steps

    def flops(self) -> int:
        return count_flops(self.step)


def _rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def high_water_mb() -> float:
    """This process's own peak RSS (VmHWM). Not ``ru_maxrss``: Linux carries the forking parent's peak into it."""
    with open('/proc/self/status') as f:
        line = next(ln for ln in f if ln.startswith('VmHWM:'))
    return int(line.split()[1]) / 1024


def memory_probe(spec: StepSpec) -> float:
    """Run in a fresh process: peak RSS growth (MB) over two steps."""
    bench = Bench(spec)
    before = _rss_mb()
    bench.step()
    bench.step()
    return high_water_mb() - before


def cpu_peak_memory(spec: StepSpec, threads: int | None) -> float:
    cmd = [sys.executable, '-m', 'sdae_suite.benchmarks.speed', json.dumps(spec.__dict__), str(threads or 0)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def measure(specs: list[StepSpec], repeats: int = 5, steps: int = 2, threads: int | None = None,
            log=print, probe_memory: bool = True, peak_n: int | None = None) -> dict:
    """Time every spec, interleaved round by round so that machine noise hits all of them alike. ``probe_memory``:
    measure CPU peak memory in a fresh process per spec (seconds each); ``peak_n``: matmul size of the peak."""
    device = torch.device(specs[0].device)
    peak = measured_matmul_peak(device, n=peak_n)
    benches = {s.label: Bench(s) for s in specs}
    flops, times, mem = {}, {n: [] for n in benches}, {}
    for name, b in benches.items():
        b.step()  # warm-up (allocations, kernel selection)
        flops[name] = b.flops()
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            b.step()
            mem[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
    for r in range(repeats):
        for name, b in benches.items():
            times[name].append(b.timed(steps))
        log(f'[bench] round {r + 1}/{repeats}: ' + ', '.join(f'{n} {t[-1]:.3f}s' for n, t in times.items()))
    if device.type != 'cuda':
        mem = {b.spec.label: cpu_peak_memory(b.spec, threads) if probe_memory else float('nan')
               for b in benches.values()}
    rows = {}
    for name in benches:
        t = statistics.median(times[name])
        rows[name] = dict(step_time_s=t, step_times_s=times[name], img_per_s=specs[0].batch / t,
                          flops_per_step=flops[name], achieved_tflops=flops[name] / t / 1e12,
                          frac_of_matmul_peak=flops[name] / t / peak, peak_mem_mb=mem[name])
    result = dict(device=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
                  threads=torch.get_num_threads(), matmul_peak_tflops=peak / 1e12, variants=rows)
    if 'sdae' in rows and 'mae' in rows:
        result['sdae_over_mae'] = dict(step_time=rows['sdae']['step_time_s'] / rows['mae']['step_time_s'],
                                       flops=rows['sdae']['flops_per_step'] / rows['mae']['flops_per_step'])
    for impl in OPTIMIZERS[1:]:
        for v in VARIANTS:
            if v in rows and f'{v}[{impl}]' in rows:
                result.setdefault('fused_adamw_step_change', {})[f'{v}, fused vs {impl}'] = \
                    rows[v]['step_time_s'] / rows[f'{v}[{impl}]']['step_time_s'] - 1
    return result


def format_table(result: dict) -> str:
    lines = [f"matmul peak on this machine (median): {result['matmul_peak_tflops']:.3f} TFLOP/s ({result['device']}, "
             f"{result['threads']} threads)"]
    cols = ('step (s)', 9), ('img/s', 8), ('GFLOP/step', 11), ('TFLOP/s', 8), ('of peak', 8), ('peak MB', 8)
    head = f"{'variant':<28}" + ''.join(f' {c:>{w}}' for c, w in cols)
    lines += [head, '-' * len(head)]
    for name, r in result['variants'].items():
        lines.append(f"{name:<28} {r['step_time_s']:>9.3f} {r['img_per_s']:>8.2f} {r['flops_per_step'] / 1e9:>11.1f} "
                     f"{r['achieved_tflops']:>8.3f} {r['frac_of_matmul_peak']:>8.1%} {r['peak_mem_mb']:>8.0f}")
    if 'sdae_over_mae' in result:
        s = result['sdae_over_mae']
        verdict = 'OK' if s['step_time'] <= s['flops'] else 'ABOVE the FLOP ratio'
        lines.append(f"SdAE / MAE: step time x{s['step_time']:.2f}, FLOPs x{s['flops']:.2f} -> {verdict}")
    for what, change in result.get('fused_adamw_step_change', {}).items():
        lines.append(f'AdamW {what}: step time {change:+.1%}')
    return '\n'.join(lines)


def save(result: dict, out: str | Path) -> Path:
    atomic_write_json(result, out)
    return Path(out)


if __name__ == '__main__':  # the memory probe's child process: spec as JSON, thread count
    if int(sys.argv[2]):
        torch.set_num_threads(int(sys.argv[2]))
    torch.manual_seed(0)
    print(memory_probe(StepSpec(**json.loads(sys.argv[1]))))
