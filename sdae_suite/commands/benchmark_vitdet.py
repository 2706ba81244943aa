#!/usr/bin/env python
"""ViTDet-config backbone vs timm's samvit_base_patch16 (the same architecture), forward + backward, side by side.

    python tools/benchmark_vitdet.py [--img-size 1024] [--batch 1] [--rounds 3] [--warmup 1] [--threads 1]
                                     [--device cpu] [--out vitdet_speed.json]

Prints each model's median seconds per forward + backward and the ratio ours / reference (<= 1.0: no slower); on a
CPU the seconds are this process's CPU time (robust to other processes on a shared machine), wall time alongside.
On a CPU, ViT-B at 1024 px is tens of seconds per step and needs ~10 GB of memory: batch 1, few rounds.
The measurement lives in sdae_suite/benchmarks/vitdet_speed.py.
"""
from __future__ import annotations

import argparse

from sdae_suite.benchmarks.vitdet_speed import measure
from sdae_suite.engine.atomic import atomic_write_json


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--img-size', type=int, default=1024)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--rounds', type=int, default=3, help='timed rounds (each: one step of each model)')
    p.add_argument('--warmup', type=int, default=1, help='untimed rounds first')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads (0: leave as is)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--out', help='write the result as JSON')
    args = p.parse_args(argv)
    result = measure(args.img_size, args.batch, args.rounds, args.warmup, args.threads or None, args.device)
    for name, sec in result.median_s.items():
        print(f'{name:12s} median {sec:8.3f} s ({result.clock}) per forward+backward  (rounds: '
              f'{", ".join(f"{t:.3f}" for t in result.seconds[name])}; wall: '
              f'{", ".join(f"{t:.3f}" for t in result.wall_seconds[name])})')
    print(f'ratio ours / timm samvit: {result.ratio_of_medians:.3f} (ratio of medians), '
          f'{result.median_of_ratios:.3f} (median of per-round ratios) | {result.img_size} px, batch {result.batch}, '
          f'{result.machine}')
    out = result.to_dict()
    if args.out:
        atomic_write_json(out, args.out)
    return out


if __name__ == '__main__':
    main()
