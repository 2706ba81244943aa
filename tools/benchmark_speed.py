#!/usr/bin/env python
"""Pretraining step cost of SdAE, MAE and SdAE with a full-image teacher, measured in ONE run, interleaved.

    python tools/benchmark_speed.py [--size base] [--img-size 224] [--batch 8] [--repeats 5] [--out speed.json]

A step is what training does per iteration: forward, backward, AdamW step and (SdAE) the EMA teacher update, on a
fixed synthetic batch (no data loading). Reported per variant: median step time over the repeats, images/s, peak
memory (GPU: allocator peak; CPU: peak RSS of a fresh process running two steps, minus its RSS before them),
FLOPs per step (torch.utils.flop_counter: matmuls, convolutions, attention; forward + backward) and the achieved
FLOP/s as a fraction of this machine's measured matmul peak. On a GPU the step runs under bf16 autocast with
PyTorch's fused attention (SDPA). Target: SdAE / MAE step-time ratio <= their FLOP ratio (~1.45 at ViT-B/16, mask 0.75).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script without PYTHONPATH

import torch  # noqa: E402
from timm.optim import param_groups_weight_decay  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from pretrain.hooks import ema_update  # noqa: E402
from pretrain.model import MaskedPretrainer  # noqa: E402

SIZES = {  # embed_dim, depth, heads
    'tiny': (192, 12, 3), 'small': (384, 12, 6), 'base': (768, 12, 12), 'large': (1024, 24, 16)}
VARIANTS = {
    'sdae': dict(objective='sdae', teacher_view='folds'),
    'mae': dict(objective='mae'),
    'sdae_full_teacher': dict(objective='sdae', teacher_view='full', cos_dim='channels'),  # official full-view loss
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--size', choices=SIZES, default='base')
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--patch-size', type=int, default=16)
    p.add_argument('--decoder', default='8x512x16', help='depth x width x heads')
    p.add_argument('--mask-ratio', type=float, default=0.75)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--repeats', type=int, default=5, help='timed rounds; each round times every variant once')
    p.add_argument('--steps', type=int, default=2, help='steps per variant per round')
    p.add_argument('--variants', nargs='+', choices=VARIANTS, default=list(VARIANTS))
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, help='CPU threads (default: torch default; 1 is steadier on a busy machine)')
    p.add_argument('--out', default='work_dirs/benchmark_speed.json')
    p.add_argument('--memory-probe', help=argparse.SUPPRESS)  # internal: child process measuring one variant on CPU
    return p.parse_args(argv)


class Bench:
    """One variant: model, optimizer and a step closure on a fixed batch."""

    def __init__(self, name: str, args: argparse.Namespace):
        d, depth, heads = SIZES[args.size]
        dd, dw, dh = (int(v) for v in args.decoder.split('x'))
        self.name, self.device = name, torch.device(args.device)
        self.model = MaskedPretrainer(
            encoder=dict(img_size=args.img_size, patch_size=args.patch_size, embed_dim=d, depth=depth, num_heads=heads,
                         drop_path_rate=0.1),
            decoder=dict(embed_dim=dw, depth=dd, num_heads=dh), mask_ratio=args.mask_ratio, **VARIANTS[name],
        ).to(self.device).train()
        groups = param_groups_weight_decay(self.model, 0.05, no_weight_decay_list=('*pos_embed', '*cls_token',
                                                                                   '*mask_token'))
        self.opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95))
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(args.batch, 3, args.img_size, args.img_size, generator=g).to(self.device)
        self.autocast = (torch.autocast('cuda', dtype=torch.bfloat16) if self.device.type == 'cuda' else nullcontext())

    def step(self) -> None:
        with self.autocast:
            loss = self.model(self.x, mode='loss')['loss']
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.model.teacher is not None:
            ema_update(self.model.teacher, self.model.encoder, 0.996)

    def sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize()

    def timed(self, steps: int) -> float:
        self.sync()
        t = time.perf_counter()
        for _ in range(steps):
            self.step()
        self.sync()
        return (time.perf_counter() - t) / steps

    def flops(self) -> int:
        with FlopCounterMode(display=False) as fc:
            self.step()
        return fc.get_total_flops()


def matmul_peak(device: torch.device) -> float:
    """Best of a few large square matmuls, FLOP/s (fp32 on CPU, bf16 on GPU: the precisions the steps use)."""
    n, dtype = (8192, torch.bfloat16) if device.type == 'cuda' else (2048, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float('inf')
    for _ in range(5):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.type == 'cuda':
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def cpu_peak_memory(name: str, argv: list[str]) -> float:
    """Peak RSS growth (MB) of a fresh process running two steps of ``name`` (CPU has no allocator statistics)."""
    out = subprocess.run([sys.executable, __file__, *argv, '--memory-probe', name], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.memory_probe:
        bench = Bench(args.memory_probe, args)
        before = _rss_mb()
        bench.step()
        bench.step()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before)
        return {}
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    print(f'[bench] ViT-{args.size}/{args.patch_size} at {args.img_size}, decoder {args.decoder}, mask '
          f'{args.mask_ratio}, batch {args.batch}, device {device} ({threads} threads), {args.repeats} rounds x '
          f'{args.steps} steps, variants {args.variants}', flush=True)
    peak = matmul_peak(device)
    benches = {name: Bench(name, args) for name in args.variants}
    flops, times, mem = {}, {n: [] for n in benches}, {}
    for name, b in benches.items():
        b.step()  # warm-up (allocations, kernel selection)
        flops[name] = b.flops()
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            b.step()
            mem[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
    for r in range(args.repeats):
        for name, b in benches.items():
            times[name].append(b.timed(args.steps))
        print(f'[bench] round {r + 1}/{args.repeats}: ' + ', '.join(f'{n} {t[-1]:.3f}s' for n, t in times.items()),
              flush=True)
    if device.type != 'cuda':
        mem = {name: cpu_peak_memory(name, argv) for name in benches}

    rows = {}
    for name in benches:
        t = statistics.median(times[name])
        rows[name] = dict(step_time_s=t, step_times_s=times[name], img_per_s=args.batch / t, flops_per_step=flops[name],
                          achieved_tflops=flops[name] / t / 1e12, frac_of_matmul_peak=flops[name] / t / peak,
                          peak_mem_mb=mem[name])
    result = dict(config=vars(args) | {'threads': threads}, device=torch.cuda.get_device_name() if device.type == 'cuda'
                  else 'cpu', matmul_peak_tflops=peak / 1e12, variants=rows)
    if 'sdae' in rows and 'mae' in rows:
        result['sdae_over_mae'] = dict(step_time=rows['sdae']['step_time_s'] / rows['mae']['step_time_s'],
                                       flops=rows['sdae']['flops_per_step'] / rows['mae']['flops_per_step'])
    print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f'[bench] wrote {out}')
    return result


def print_table(result: dict) -> None:
    print(f"\nmatmul peak on this machine: {result['matmul_peak_tflops']:.3f} TFLOP/s ({result['device']})")
    cols = ('step (s)', 9), ('img/s', 8), ('GFLOP/step', 11), ('TFLOP/s', 8), ('of peak', 8), ('peak MB', 8)
    head = f"{'variant':<18}" + ''.join(f' {c:>{w}}' for c, w in cols)
    print(head + '\n' + '-' * len(head))
    for name, r in result['variants'].items():
        print(f"{name:<18} {r['step_time_s']:>9.3f} {r['img_per_s']:>8.2f} {r['flops_per_step'] / 1e9:>11.1f} "
              f"{r['achieved_tflops']:>8.3f} {r['frac_of_matmul_peak']:>8.1%} {r['peak_mem_mb']:>8.0f}")
    if 'sdae_over_mae' in result:
        s = result['sdae_over_mae']
        verdict = 'OK' if s['step_time'] <= s['flops'] * 1.0 else 'ABOVE the FLOP ratio'
        print(f"SdAE / MAE: step time x{s['step_time']:.2f}, FLOPs x{s['flops']:.2f} -> {verdict}")


if __name__ == '__main__':
    main()
