"""Check a COCO or ADE20K dataset root before hours of training, and say exactly what is wrong.

    python tools/check_dataset.py data/coco                       # COCO 2017 layout, 80 classes
    python tools/check_dataset.py data/ade/ADEChallengeData2016   # ADE20K layout, 150 classes
    python tools/check_dataset.py data/demo/coco --num-classes 6  # the demo sets (class counts from meta.json if any)

COCO: annotations/instances_{train,val}{2017,}.json and the image folders {train,val}{2017,}/; JSON structure, class
count, every image listed exists and decodes with its declared size, category and image ids that resolve, polygons
with >= 3 points, unique annotation ids, and every annotation mmdet would drop without a word (box outside the image,
area <= 0 or a side < 1 px, unknown category).
ADE20K: images/{training,validation}/*.jpg and annotations/{training,validation}/*.png; every image has a label map
of the same size, single channel, with values in [0, num_classes] (0 = other, ignored via reduce_zero_label) or 255.

tools/train.py and tools/test.py run the same checks (preflight/dataset.py) on the datasets of their config at start,
reading image headers instead of decoding images (--no-decode here).
Exit code 0 when the root is usable, 1 otherwise; every problem is printed with the file and the fix.
``--json FILE`` also writes the findings.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdae_suite.preflight.dataset import check_root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('root', type=Path, help='dataset root (COCO: holds annotations/, ADE20K: holds images/)')
    p.add_argument('--kind', choices=['coco', 'ade'], help='default: detected from the layout')
    p.add_argument('--num-classes', type=int, help='expected classes (default: meta.json of a demo set, else 80 / 150)')
    p.add_argument('--no-decode', action='store_true',
                   help='read image sizes from the file headers instead of decoding the images (faster; label maps '
                        'are still decoded for their class ids)')
    p.add_argument('--json', type=Path, help='also write the findings here')
    args = p.parse_args(argv)
    return check_root(args.root, args.kind, args.num_classes, decode=not args.no_decode, json_out=args.json)


if __name__ == '__main__':
    sys.exit(main())
