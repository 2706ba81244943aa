"""Check a COCO, ADE20K or ImageNet-format dataset root before hours of training, and say exactly what is wrong.

    python tools/check_dataset.py data/coco                       # COCO 2017 layout, 80 classes
    python tools/check_dataset.py data/ade/ADEChallengeData2016   # ADE20K layout, 150 classes
    python tools/check_dataset.py data/imagenet                   # ImageNet layout, 1000 classes, image headers
    python tools/check_dataset.py data/imagenet --decode          # ... and every image decoded (slow: ~1 h on IN-1k)
    python tools/check_dataset.py data/demo/coco --num-classes 6  # the demo sets (class counts from meta.json if any)

The kind is detected from the layout (--kind coco|ade|imagenet to force it).
COCO: annotations/instances_{train,val}{2017,}.json and the image folders {train,val}{2017,}/; JSON structure, class
count, every image listed exists and decodes with its declared size, category and image ids that resolve, polygons
with >= 3 points, unique annotation ids, and every annotation mmdet would drop without a word (box outside the image,
area <= 0 or a side < 1 px, unknown category).
ADE20K: images/{training,validation}/*.jpg and annotations/{training,validation}/*.png; every image has a label map
of the same size, single channel, with values in [0, num_classes] (0 = other, ignored via reduce_zero_label) or 255.
ImageNet (the classification configs' SdAEImageFolder): train/<class>/* and val/<class>/* (torchvision ImageFolder
layout, classes = sorted folder names); both splits hold the same classes, as many as --num-classes (default 1000, or
the folders listed in a demo set's meta.json, e.g. 6 for data/demo/pretrain), no empty class folder, no image outside
a class folder, and every image readable: its header parses and a JPEG / PNG ends with its end marker (a truncated
file does not). The header check is the default for ImageNet (1.3M files in minutes; progress with an ETA on stderr
for trees of more than 20k files); --decode decodes every image as a run does and also finds corrupt image data.

Decoding: COCO and ADE20K images are decoded by default (--no-decode reads only the headers; label maps are always
decoded for their class ids); ImageNet reads headers by default (--decode decodes). tools/train.py and tools/test.py
run the same checks (preflight/dataset.py, preflight/imagefolder.py) on the datasets of their config at start,
reading image headers, not decoding.
Exit code 0 when the root is usable, 1 otherwise; every problem is printed with the file and the fix.
``--json FILE`` also writes the findings (root, kind, num_classes, decode, ok, info, problems).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdae_suite.preflight.dataset import check_root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('root', type=Path, help='dataset root (COCO: holds annotations/, ADE20K: holds images/, ImageNet: '
                                           'holds train/ and val/)')
    p.add_argument('--kind', choices=['coco', 'ade', 'imagenet'], help='default: detected from the layout')
    p.add_argument('--num-classes', type=int,
                   help='expected classes (default: meta.json of a demo set, else 80 / 150 / 1000)')
    decoding = p.add_mutually_exclusive_group()
    decoding.add_argument('--decode', dest='decode', action='store_true', default=None,
                          help='decode every image (the default for COCO / ADE20K; for ImageNet it finds corrupt '
                               'image data behind a valid header, at a few ms per image)')
    decoding.add_argument('--no-decode', dest='decode', action='store_false',
                          help='read image sizes from the file headers instead of decoding the images (faster; the '
                               'default for ImageNet; ADE20K label maps are still decoded for their class ids)')
    p.add_argument('--json', type=Path, help='also write the findings here')
    args = p.parse_args(argv)
    return check_root(args.root, args.kind, args.num_classes, decode=args.decode, json_out=args.json)


if __name__ == '__main__':
    sys.exit(main())
