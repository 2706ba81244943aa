"""GPU readiness in one command (`make gpu-check`): every CUDA path of the suite exercised once, with figures
(benchmarks/gpu_check.py lists the checks). Prints a PASS/FAIL table, writes work_dirs/gpu_check/results.{json,md},
exits non-zero on any FAIL. Without a GPU it says so in one line and exits 0.

    python tools/gpu_check.py [--tier2] [--batch 128] [--out work_dirs/gpu_check]
"""
from __future__ import annotations

import argparse

from sdae_suite.benchmarks import gpu_check


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--tier2', action='store_true', help='also fine-tune the demo Mask R-CNN and UperNet with --amp '
                                                        '(needs mmcv with CUDA ops: make gpu-check TIER2=1)')
    p.add_argument('--batch', type=int, default=128, help='images per pretraining step (ViT-B/16, 224 px)')
    p.add_argument('--out', default='work_dirs/gpu_check')
    args = p.parse_args(argv)
    return gpu_check.main(tier2=args.tier2, batch=args.batch, out=args.out)


if __name__ == '__main__':
    raise SystemExit(main())
