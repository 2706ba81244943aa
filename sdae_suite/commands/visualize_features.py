#!/usr/bin/env python
"""Attention and patch-feature maps of ViT checkpoints on a fixed set of images: one row per checkpoint.

  python tools/visualize_features.py SdAE=work_dirs/demo/pretrain_sdae/backbone_student.pth \\
      MAE=work_dirs/demo/pretrain_mae/backbone_student.pth random --images data/demo/coco/val --out vis/

CKPT: a checkpoint file (any layout tools/train.py --pretrained accepts), NAME=FILE to label its row, or `random`
(random init with the first checkpoint's architecture, --seed). Writes attention.png (last-block cls-to-patch
attention, every head and their mean), pca.png (first three PCA components of the patch features as RGB) and
visuals.json (read by tools/benchmark_report.py --visuals). Library code: sdae_suite/visualize/features.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdae_suite.visualize.features import visualize


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('checkpoints', nargs='+', metavar='CKPT', help="checkpoint file, NAME=FILE, or 'random'")
    p.add_argument('--images', type=Path, required=True, help='folder of images (the first --num-images by name)')
    p.add_argument('--out', type=Path, required=True, help='output folder')
    p.add_argument('--num-images', type=int, default=4)
    p.add_argument('--size', type=int, help="input size in px (default: the first checkpoint's training size)")
    p.add_argument('--seed', type=int, default=0, help='seed of the random-init row')
    p.add_argument('--branch', choices=['student', 'teacher'], default='student',
                   help='encoder of two-encoder checkpoints (raw SdAE pretraining, official SdAE)')
    p.add_argument('--num-heads', type=int,
                   help='attention heads, for files whose metadata does not say (default: embed_dim / 64)')
    args = p.parse_args(argv)
    if args.num_images < 1:
        p.error('--num-images must be >= 1')
    manifest = visualize(args.checkpoints, args.images, args.out, args.num_images, args.size, args.seed, args.branch,
                         args.num_heads)
    print(f'[visualize_features] wrote {args.out / "attention.png"}, {args.out / "pca.png"}, {manifest}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
