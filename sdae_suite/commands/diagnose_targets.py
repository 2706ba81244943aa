#!/usr/bin/env python
"""What share of the pretraining targets a no-learning baseline explains, against the student's loss.

  python tools/diagnose_targets.py work_dirs/sdae_vit-tiny-p8_demo/epoch_6.pth data/demo/coco/val \\
      --out work_dirs/sdae_vit-tiny-p8_demo/diagnose_targets.json

CKPT: a raw pretraining checkpoint (tools/pretrain.sh). DATA: a folder of images not used in pretraining (searched
recursively). Prints a table and writes JSON (default: next to CKPT, <stem>_diagnose_targets.json).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdae_suite.engine.atomic import atomic_write_json
from sdae_suite.pretrain.diagnose import DiagnoseError, diagnose, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('checkpoint', metavar='CKPT')
    p.add_argument('data', metavar='DATA')
    p.add_argument('--max-images', type=int, default=256)
    p.add_argument('--seed', type=int, default=0, help='mask seed')
    p.add_argument('--out', help='JSON path')
    args = p.parse_args(argv)
    try:
        result = diagnose(args.checkpoint, args.data, args.max_images, args.seed)
    except (DiagnoseError, FileNotFoundError) as e:
        print(f'diagnose_targets: error: {e}', file=sys.stderr)
        return 2
    out = args.out or str(Path(args.checkpoint).with_name(f'{Path(args.checkpoint).stem}_diagnose_targets.json'))
    atomic_write_json(result, out, allow_nan=False)
    print(table(result))
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
