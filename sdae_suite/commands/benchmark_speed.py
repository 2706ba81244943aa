#!/usr/bin/env python
"""Pretraining step cost of SdAE, MAE and SdAE with a full-image teacher, measured in ONE run, interleaved
(sdae_suite/benchmarks/speed.py says what a step is and how each column is measured).

    python tools/benchmark_speed.py [--size base] [--img-size 224] [--batch 8] [--repeats 5] [--threads 1]
                                    [--optimizers fused foreach] [--out work_dirs/benchmark_speed.json]

On a GPU the step runs under bf16 autocast with PyTorch's fused attention (SDPA). Targets: SdAE / MAE step-time
ratio <= their FLOP ratio (~1.45 at ViT-B/16, mask 0.75); `--optimizers fused foreach` shows what the fused AdamW
(the configs' default) saves per step.
"""
from __future__ import annotations

import argparse

import torch

from sdae_suite.benchmarks.speed import OPTIMIZERS, SIZES, VARIANTS, StepSpec, format_table, measure, save


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
    p.add_argument('--optimizers', nargs='+', choices=OPTIMIZERS, default=['fused'],
                   help='AdamW implementations to compare (each variant is timed with each)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, help='CPU threads (default: torch default; 1 is steadier on a busy machine)')
    p.add_argument('--out', default='work_dirs/benchmark_speed.json')
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = 'bf16' if args.device.startswith('cuda') else 'fp32'
    specs = [StepSpec(variant=v, size=args.size, img_size=args.img_size, patch_size=args.patch_size,
                      decoder=args.decoder, mask_ratio=args.mask_ratio, batch=args.batch, device=args.device,
                      dtype=dtype, optimizer=o) for v in args.variants for o in args.optimizers]
    print(f'[bench] ViT-{args.size}/{args.patch_size} at {args.img_size}, decoder {args.decoder}, mask '
          f'{args.mask_ratio}, batch {args.batch}, device {args.device} ({torch.get_num_threads()} threads, {dtype}), '
          f'{args.repeats} rounds x {args.steps} steps, {[s.label for s in specs]}', flush=True)
    result = measure(specs, args.repeats, args.steps, args.threads, log=lambda m: print(m, flush=True))
    result['config'] = vars(args)
    print('\n' + format_table(result))
    print(f'[bench] wrote {save(result, args.out)}')
    return result


if __name__ == '__main__':
    main()
