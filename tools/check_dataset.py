"""Check a COCO or ADE20K dataset root before hours of training, and say exactly what is wrong.

    python tools/check_dataset.py data/coco                       # COCO 2017 layout, 80 classes
    python tools/check_dataset.py data/ade/ADEChallengeData2016   # ADE20K layout, 150 classes
    python tools/check_dataset.py data/demo/coco --num-classes 6  # the demo sets (class counts from meta.json if any)

COCO: annotations/instances_{train,val}{2017,}.json and the image folders {train,val}{2017,}/; JSON structure, class
count, every image listed exists and decodes with its declared size, boxes inside the image with positive size,
category and image ids that resolve, polygons with >= 3 points, unique annotation ids.
ADE20K: images/{training,validation}/*.jpg and annotations/{training,validation}/*.png; every image has a label map
of the same size, single channel, with values in [0, num_classes] (0 = other, ignored via reduce_zero_label) or 255.

Exit code 0 when the root is usable, 1 otherwise; every problem is printed with the file and the fix.
``--json FILE`` also writes the findings.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

COCO_SPLITS = ('train', 'val')
ADE_SPLITS = ('training', 'validation')
MAX_LISTED = 10  # problems of one kind printed in full; the rest are counted


class Findings:
    def __init__(self) -> None:
        self.problems: dict[str, list[str]] = {}
        self.info: list[str] = []

    def add(self, kind: str, message: str) -> None:
        self.problems.setdefault(kind, []).append(message)

    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        lines = [f'  {m}' for m in self.info]
        for kind, msgs in self.problems.items():
            lines.append(f'PROBLEM {kind} ({len(msgs)}):')
            lines += [f'  - {m}' for m in msgs[:MAX_LISTED]]
            if len(msgs) > MAX_LISTED:
                lines.append(f'  ... and {len(msgs) - MAX_LISTED} more')
        return '\n'.join(lines)


def detect_kind(root: Path) -> str | None:
    if (root / 'annotations').is_dir() and any((root / 'annotations').glob('instances_*.json')):
        return 'coco'
    if (root / 'images').is_dir() or (root / 'annotations' / 'training').is_dir():
        return 'ade'
    return None


def expected_classes(root: Path, kind: str, given: int | None) -> int:
    if given is not None:
        return given
    meta = root.parent / 'meta.json'  # the demo set describes itself
    if meta.is_file():
        try:
            m = json.loads(meta.read_text())
            if kind == 'coco':
                return len(m['coco']['classes'])
            return len(m['ade']['classes_reduce_zero_label'])
        except (KeyError, ValueError, TypeError):
            print(f'[check_dataset] {meta} is not a demo-set description; assuming the real dataset\'s class count')
    return 80 if kind == 'coco' else 150


def _decode(path: Path) -> np.ndarray | None:
    data = np.fromfile(str(path), dtype=np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None


def check_coco(root: Path, num_classes: int, f: Findings, decode: bool) -> None:
    for split in COCO_SPLITS:
        ann = next((root / 'annotations' / f'instances_{split}{s}.json' for s in ('2017', '')
                    if (root / 'annotations' / f'instances_{split}{s}.json').is_file()), None)
        img_dir = next((root / f'{split}{s}' for s in ('2017', '') if (root / f'{split}{s}').is_dir()), None)
        if ann is None:
            f.add('missing annotation file', f'{root}/annotations/instances_{split}2017.json (or instances_{split}'
                                             f'.json) not found: unpack the COCO annotations into {root}/annotations')
            continue
        if img_dir is None:
            f.add('missing image folder', f'{root}/{split}2017/ (or {root}/{split}/) not found: unpack the {split} '
                                          f'images there')
            continue
        try:
            data = json.loads(ann.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            f.add('unreadable annotation file', f'{ann}: not valid JSON ({e}); re-download or regenerate it')
            continue
        missing_keys = [k for k in ('images', 'annotations', 'categories') if not isinstance(data.get(k), list)]
        if missing_keys:
            f.add('bad annotation structure', f'{ann}: no list under {missing_keys}; this is not a COCO instances file')
            continue
        cats = {c.get('id') for c in data['categories']}
        if len(cats) != num_classes:
            f.add('class count', f'{ann}: {len(cats)} categories, expected {num_classes}; pass --num-classes N if the '
                                 f'set is meant to differ, and set num_classes/metainfo in the config to match')
        images = {im.get('id'): im for im in data['images']}
        dup_img = [k for k, n in Counter(im.get('id') for im in data['images']).items() if n > 1]
        if dup_img:
            f.add('duplicate image ids', f'{ann}: image ids {dup_img[:5]} appear more than once')
        n_files = 0
        for im in data['images']:
            path = img_dir / str(im.get('file_name', ''))
            if not path.is_file():
                f.add('missing image files', f'{path}: listed in {ann.name} (id {im.get("id")}) but not on disk')
                continue
            n_files += 1
            if decode:
                arr = _decode(path)
                if arr is None:
                    f.add('undecodable images', f'{path}: cannot be decoded (truncated or not an image); replace it')
                elif (arr.shape[0], arr.shape[1]) != (im.get('height'), im.get('width')):
                    f.add('image size mismatch', f'{path}: is {arr.shape[1]}x{arr.shape[0]} but {ann.name} says '
                                                 f'{im.get("width")}x{im.get("height")}')
        ann_ids = Counter(a.get('id') for a in data['annotations'])
        dup = [k for k, n in ann_ids.items() if n > 1]
        if dup:
            f.add('duplicate annotation ids', f'{ann}: annotation ids {dup[:5]} appear more than once (pycocotools '
                                              f'will silently merge them)')
        for a in data['annotations']:
            where = f'{ann.name} annotation id {a.get("id")}'
            im = images.get(a.get('image_id'))
            if im is None:
                f.add('dangling image ids', f'{where}: image_id {a.get("image_id")} is not in "images"')
                continue
            if a.get('category_id') not in cats:
                f.add('unknown category ids', f'{where}: category_id {a.get("category_id")} not in "categories"')
            bbox = a.get('bbox')
            if not (isinstance(bbox, list) and len(bbox) == 4):
                f.add('bad boxes', f'{where}: bbox {bbox!r} is not [x, y, w, h]')
            else:
                x, y, w, h = bbox
                if w <= 0 or h <= 0:
                    f.add('bad boxes', f'{where}: bbox {bbox} has non-positive width/height')
                elif x < -1 or y < -1 or x + w > im.get('width', 0) + 1 or y + h > im.get('height', 0) + 1:
                    f.add('bad boxes', f'{where}: bbox {bbox} lies outside the {im.get("width")}x{im.get("height")} '
                                       f'image {im.get("file_name")}')
            seg = a.get('segmentation')
            if isinstance(seg, list):
                bad = [p for p in seg if not isinstance(p, list) or len(p) < 6 or len(p) % 2]
                if bad or not seg:
                    f.add('bad polygons', f'{where}: polygons need >= 3 (x, y) points, got lengths '
                                          f'{[len(p) if isinstance(p, list) else p for p in (seg or [[]])][:5]}')
            elif not isinstance(seg, dict) and seg is not None:
                f.add('bad polygons', f'{where}: segmentation is neither polygons nor RLE')
        f.info.append(f'coco {split}: {ann} - {len(data["images"])} images ({n_files} on disk), '
                      f'{len(data["annotations"])} annotations, {len(cats)} categories')


def check_ade(root: Path, num_classes: int, f: Findings, decode: bool) -> None:
    for split in ADE_SPLITS:
        img_dir, ann_dir = root / 'images' / split, root / 'annotations' / split
        for d, what in ((img_dir, 'images'), (ann_dir, 'label maps')):
            if not d.is_dir():
                f.add('missing folder', f'{d} not found: the {split} {what} belong there (ADEChallengeData2016 layout)')
        if not (img_dir.is_dir() and ann_dir.is_dir()):
            continue
        images = sorted(img_dir.glob('*.jpg'))
        labels = {p.stem: p for p in ann_dir.glob('*.png')}
        if not images:
            f.add('empty folder', f'{img_dir}: no .jpg images')
        for stray in sorted(set(labels) - {p.stem for p in images})[:MAX_LISTED]:
            f.add('label maps without image', f'{labels[stray]}: no {img_dir}/{stray}.jpg')
        seen = Counter()
        for img in images:
            lab = labels.get(img.stem)
            if lab is None:
                f.add('missing label maps', f'{img}: no {ann_dir}/{img.stem}.png')
                continue
            if not decode:
                continue
            arr, seg = _decode(img), _decode(lab)
            if arr is None:
                f.add('undecodable images', f'{img}: cannot be decoded; replace it')
                continue
            if seg is None:
                f.add('undecodable label maps', f'{lab}: cannot be decoded; replace it')
                continue
            if seg.ndim != 2:
                f.add('label maps not single-channel', f'{lab}: has {seg.shape[2]} channels; label maps must be '
                                                       f'8-bit single-channel class ids (not a colour palette image)')
                continue
            if seg.shape != arr.shape[:2]:
                f.add('label size mismatch', f'{lab}: {seg.shape[1]}x{seg.shape[0]} but the image is '
                                             f'{arr.shape[1]}x{arr.shape[0]}')
            values = np.unique(seg)
            bad = [int(v) for v in values if v > num_classes and v != 255]
            if bad:
                f.add('label values out of range', f'{lab}: values {bad[:5]} > {num_classes} classes (0 = other, '
                                                   f'255 = ignore); wrong --num-classes or a broken map')
            seen.update(int(v) for v in values)
        f.info.append(f'ade {split}: {len(images)} images, {len(labels)} label maps'
                      + (f', class ids present {sorted(seen)}' if seen else ''))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('root', type=Path, help='dataset root (COCO: holds annotations/, ADE20K: holds images/)')
    p.add_argument('--kind', choices=['coco', 'ade'], help='default: detected from the layout')
    p.add_argument('--num-classes', type=int, help='expected classes (default: meta.json of a demo set, else 80 / 150)')
    p.add_argument('--no-decode', action='store_true', help='check files exist, skip decoding them (faster)')
    p.add_argument('--json', type=Path, help='also write the findings here')
    args = p.parse_args(argv)

    root: Path = args.root
    f = Findings()
    if not root.is_dir():
        print(f'PROBLEM: dataset root {root} does not exist (relative paths are from {Path.cwd()}); '
              f'create it or pass the right path')
        return 1
    kind = args.kind or detect_kind(root)
    if kind is None:
        print(f'PROBLEM: {root} looks like neither COCO (annotations/instances_*.json) nor ADE20K (images/training, '
              f'annotations/training); pass the folder that holds them, or --kind')
        return 1
    n = expected_classes(root, kind, args.num_classes)
    (check_coco if kind == 'coco' else check_ade)(root, n, f, decode=not args.no_decode)
    verdict = 'OK' if f.ok() else f'{sum(len(v) for v in f.problems.values())} problems'
    print(f'check_dataset: {kind} root {root} (expecting {n} classes): {verdict}\n{f.render()}')
    if args.json:
        args.json.write_text(json.dumps(dict(root=str(root), kind=kind, num_classes=n, ok=f.ok(), info=f.info,
                                             problems=f.problems), indent=2))
    return 0 if f.ok() else 1


if __name__ == '__main__':
    sys.exit(main())
