"""COCO and ADE20K data checks: one implementation for tools/check_dataset.py (a whole dataset root) and for the start
of every tools/train.py / tools/test.py run (the datasets the config reads), so both print the same messages.
ImageNet-format class folders (classification configs, ``SdAEImageFolder``) are checked by preflight/imagefolder.py,
reported through the same ``Findings`` and dispatched from here (``check_root``, ``check_run_datasets``).

What a run checks at start (level 'headers'), and why that is cheap enough:
- COCO: the annotation JSON is parsed (mmdet parses it again moments later); image sizes come from the file headers
  (PIL reads only the header), compared with the sizes the JSON declares; every annotation mmdet would silently drop
  (box without overlap with the image, area <= 0 or a side < 1 px, category outside the config's classes, image_id not
  among the images) is counted and reported as a warning with the first ids, because a run still works without them.
- ADE20K-style folders: every image has a label map; the map's size (from headers) matches the image's; and the class
  ids are in range. Class ids cannot be read from a header, so label maps ARE decoded: they are small 8-bit PNGs
  (measured: 4 ms to decode and 1 ms to list the ids of a 512x683 map, 0.15 ms for a JPEG header; ADE20K's 22k pairs
  take about 2 min of CPU, spread over up to 8 threads), and an id out of range otherwise kills the run (possibly hours
  in, at the first validation) with ``IndexError: Target 49 is out of bounds`` that names no file. Catching it in the
  pipeline instead would cost nothing up front but stop a run only when the map comes round, and not a validation
  map before the first validation.
Images are not decoded at run start; the CLI's default level 'full' decodes them too (finds truncated files).

The drop rules mirror ``mmdet.datasets.CocoDataset.parse_data_info`` (mmdet 3.3), which drops without a word and has
no API that says why; tests/test_check_dataset.py checks that our count equals what mmdet keeps.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from sdae_suite.engine.atomic import atomic_write_json
from sdae_suite.preflight.findings import (  # noqa: F401  (DatasetError, FIRST_IDS: re-exported for the callers)
    DROPPED,
    FIRST_IDS,
    MAX_LISTED,
    TOLERATED,
    DatasetError,
    Findings,
)
from sdae_suite.preflight.imagefolder import check_imagefolder_root, looks_like_imagefolder

COCO_SPLITS = ('train', 'val')
ADE_SPLITS = ('training', 'validation')


def _pool_map(fn: Callable, items: Sequence) -> list:
    """Reading headers and decoding PNGs releases the GIL: threads give the cores to a check of 20k+ files."""
    if len(items) < 64:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items, chunksize=64))


def _decode(path: Path) -> np.ndarray | None:
    data = np.fromfile(str(path), dtype=np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None


def _image_size(path: Path, decode: bool) -> tuple[int, int] | None:
    """(width, height); None when unreadable. Without ``decode`` only the header is read (PIL opens lazily)."""
    if decode:
        arr = _decode(path)
        return None if arr is None else (arr.shape[1], arr.shape[0])
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError):
        return None


# ----------------------------------------------------------------------------------------------------------- COCO
def _load_coco_json(ann: Path, f: Findings) -> dict | None:
    try:
        data = json.loads(ann.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        f.add('unreadable annotation file', f'{ann}: not valid JSON ({e}); re-download or regenerate it')
        return None
    if not isinstance(data, dict):
        f.add('bad annotation structure', f'{ann}: holds a JSON {type(data).__name__}, not an object with "images", '
                                          f'"annotations" and "categories"; this is not a COCO instances file')
        return None
    missing = [k for k in ('images', 'annotations', 'categories') if not isinstance(data.get(k), list)]
    if missing:
        f.add('bad annotation structure', f'{ann}: no list under {missing}; this is not a COCO instances file')
        return None
    return data


def _annotation_problem(a: dict, im: dict, cat_ids: set) -> tuple[str, str] | None:
    """(kind, reason) for one annotation, in the order mmdet's CocoDataset.parse_data_info tests them."""
    bbox = a.get('bbox')
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
        return 'malformed annotations', f'bbox {bbox!r} is not [x, y, w, h] (mmdet fails on it)'
    if 'area' not in a or 'category_id' not in a:
        return 'malformed annotations', 'no "area" or "category_id" (mmdet fails on it)'
    x, y, w, h = bbox
    width, height = im.get('width', 0), im.get('height', 0)
    if w <= 0 or h <= 0:
        return 'degenerate boxes', f'bbox {bbox} has non-positive width/height'
    if max(0, min(x + w, width) - max(x, 0)) * max(0, min(y + h, height) - max(y, 0)) == 0:
        return 'boxes outside the image', f'bbox {bbox} lies outside the {width}x{height} image {im.get("file_name")}'
    if a['area'] <= 0:
        return 'degenerate boxes', f'area {a["area"]} (bbox {bbox}): zero-area annotation'
    if w < 1 or h < 1:
        return 'degenerate boxes', f'bbox {bbox} is less than 1 px wide or high'
    if a['category_id'] not in cat_ids:
        return 'unknown category ids', f'category_id {a["category_id"]} not among the categories used'
    if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
        return 'boxes partly outside the image', (f'bbox {bbox} lies partly outside the {width}x{height} image '
                                                  f'{im.get("file_name")}')
    return None


def check_coco_file(ann: Path, img_dir: Path, f: Findings, decode: bool, num_classes: int | None = None,
                    classes: Sequence[str] | None = None) -> None:
    """One COCO instances file and its image folder. ``classes`` (a run's metainfo) selects the categories mmdet uses
    by name; without it (the CLI) all categories count and their number must be ``num_classes``."""
    data = _load_coco_json(ann, f)
    if data is None:
        return
    names = {c.get('name'): c.get('id') for c in data['categories'] if isinstance(c, dict)}
    if classes is not None:
        absent = [c for c in classes if c not in names]
        if absent:
            f.add('classes not in the annotation file',
                  f'{ann}: the config\'s classes {absent[:MAX_LISTED]} are not category names of this file (it has '
                  f'{sorted(map(str, names))[:MAX_LISTED]}); mmdet would silently shift the labels. Set the '
                  f'dataset\'s metainfo classes to the file\'s category names')
        cat_ids = {names[c] for c in classes if c in names}
    else:
        cat_ids = {c.get('id') for c in data['categories'] if isinstance(c, dict)}
        if num_classes is not None and len(cat_ids) != num_classes:
            f.add('class count', f'{ann}: {len(cat_ids)} categories, expected {num_classes}; pass --num-classes N if '
                                 f'the set is meant to differ, and set num_classes/metainfo in the config to match')
    images = {im.get('id'): im for im in data['images'] if isinstance(im, dict)}
    dup_img = [k for k, n in Counter(im.get('id') for im in data['images'] if isinstance(im, dict)).items() if n > 1]
    if dup_img:
        f.add('duplicate image ids', f'{ann}: image ids {dup_img[:5]} appear more than once')

    def image_problem(im: dict) -> tuple[str, str] | None:
        path = img_dir / str(im.get('file_name', ''))
        if not path.is_file():
            return 'missing image files', f'{path}: listed in {ann.name} (id {im.get("id")}) but not on disk'
        size = _image_size(path, decode)
        if size is None:
            return 'undecodable images', f'{path}: cannot be decoded (truncated or not an image); replace it'
        if size != (im.get('width'), im.get('height')):
            return 'image size mismatch', (f'{path}: is {size[0]}x{size[1]} but {ann.name} says '
                                           f'{im.get("width")}x{im.get("height")}')
        return None

    found = _pool_map(image_problem, list(images.values()))
    for problem in found:
        if problem:
            f.add(*problem)
    n_files = sum(1 for p in found if p is None or p[0] != 'missing image files')

    ann_ids = Counter(a.get('id') for a in data['annotations'] if isinstance(a, dict))
    dup = [k for k, n in ann_ids.items() if n > 1]
    if dup:
        f.add('duplicate annotation ids', f'{ann}: annotation ids {dup[:5]} appear more than once (pycocotools '
                                          f'keeps only the last of each)')
    for a in data['annotations']:
        if not isinstance(a, dict):
            f.add('malformed annotations', f'{ann.name}: an annotation is a {type(a).__name__}, not an object')
            continue
        where = f'{ann.name} annotation id {a.get("id")}'
        im = images.get(a.get('image_id'))
        if im is None:
            f.add('dangling image ids', f'{where}: image_id {a.get("image_id")} is not in "images"', a.get('id'))
            continue
        if a.get('ignore', False):  # mmdet skips these on purpose
            continue
        problem = _annotation_problem(a, im, cat_ids)
        if problem:
            f.add(problem[0], f'{where}: {problem[1]}', a.get('id'))
        seg = a.get('segmentation')
        if isinstance(seg, list):
            bad = [p for p in seg if not isinstance(p, list) or len(p) < 6 or len(p) % 2]
            if bad or not seg:
                lengths = [len(p) if isinstance(p, list) else p for p in (seg or [[]])][:5]
                f.add('bad polygons', f'{where}: polygons need >= 3 (x, y) points, got lengths {lengths}', a.get('id'))
        elif not isinstance(seg, dict) and seg is not None:
            f.add('bad polygons', f'{where}: segmentation is neither polygons nor RLE', a.get('id'))
    f.info.append(f'coco: {ann} - {len(data["images"])} images ({n_files} on disk), {len(data["annotations"])} '
                  f'annotations, {len(cat_ids)} categories used')


def check_coco_root(root: Path, num_classes: int, f: Findings, decode: bool) -> None:
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
        check_coco_file(ann, img_dir, f, decode, num_classes=num_classes)


# ---------------------------------------------------------------------------------------------------- ADE20K-style
def _check_pair(img: Path, lab: Path, decode: bool, num_classes: int, reduce_zero_label: bool,
                ignore_index: int) -> tuple[list[tuple[str, str]], set[int]]:
    problems: list[tuple[str, str]] = []
    size = _image_size(img, decode)
    if size is None:
        return [('undecodable images', f'{img}: cannot be decoded; replace it')], set()
    seg = _decode(lab)
    if seg is None:
        return [('undecodable label maps', f'{lab}: cannot be decoded; replace it')], set()
    if seg.ndim != 2:
        return [('label maps not single-channel', f'{lab}: has {seg.shape[2]} channels; label maps must be 8-bit '
                                                  f'single-channel class ids (not a colour palette image)')], set()
    if (seg.shape[1], seg.shape[0]) != size:
        problems.append(('label size mismatch', f'{lab}: {seg.shape[1]}x{seg.shape[0]} but the image {img.name} is '
                                                f'{size[0]}x{size[1]}'))
    # bincount: the ids present in a small-integer map at half the cost of np.unique's sort
    present = np.flatnonzero(np.bincount(seg.ravel())) if seg.dtype in (np.uint8, np.uint16) else np.unique(seg)
    values = {int(v) for v in present}
    # reduce_zero_label (ADE20K): 0 = other (ignored), ids 1..N are the classes; else ids 0..N-1
    top = num_classes if reduce_zero_label else num_classes - 1
    bad = sorted(v for v in values if v > top and v != ignore_index)
    if bad:
        legend = '0 = other' if reduce_zero_label else f'0..{top} = classes'
        problems.append(('label values out of range', f'{lab}: values {bad[:5]} > {top} for {num_classes} classes '
                                                      f'({legend}, {ignore_index} = ignore); wrong --num-classes or '
                                                      f'a broken map'))
    return problems, values


def check_seg_folders(img_dir: Path, ann_dir: Path, f: Findings, decode: bool, num_classes: int,
                      img_suffix: str = '.jpg', seg_suffix: str = '.png', reduce_zero_label: bool = True,
                      ignore_index: int = 255, names: Sequence[str] | None = None) -> None:
    """Images and label maps paired by name as mmseg's BaseSegDataset pairs them (recursively, or from ``names``)."""
    for d, what in ((img_dir, 'images'), (ann_dir, 'label maps')):
        if not d.is_dir():
            f.add('missing folder', f'{d} not found: the {what} belong there')
    if not (img_dir.is_dir() and ann_dir.is_dir()):
        return
    if names is None:
        names = sorted(str(p.relative_to(img_dir))[:-len(img_suffix)] for p in img_dir.rglob(f'*{img_suffix}'))
        labels = {str(p.relative_to(ann_dir))[:-len(seg_suffix)] for p in ann_dir.rglob(f'*{seg_suffix}')}
        for stray in sorted(labels - set(names)):
            f.add('label maps without image', f'{ann_dir / (stray + seg_suffix)}: no {img_dir / (stray + img_suffix)}')
    if not names:
        f.add('empty folder', f'{img_dir}: no *{img_suffix} images')
    pairs = []
    for name in names:
        img, lab = img_dir / (name + img_suffix), ann_dir / (name + seg_suffix)
        if not img.is_file():
            f.add('missing image files', f'{img}: not on disk')
        elif not lab.is_file():
            f.add('missing label maps', f'{img}: no {lab}')
        else:
            pairs.append((img, lab))
    seen: set[int] = set()
    for problems, values in _pool_map(lambda p: _check_pair(*p, decode, num_classes, reduce_zero_label,
                                                            ignore_index), pairs):
        for problem in problems:
            f.add(*problem)
        seen |= values
    f.info.append(f'seg: {img_dir} - {len(names)} images, {len(pairs)} with label maps'
                  + (f', class ids present {sorted(seen)}' if seen else ''))


def check_ade_root(root: Path, num_classes: int, f: Findings, decode: bool) -> None:
    for split in ADE_SPLITS:
        check_seg_folders(root / 'images' / split, root / 'annotations' / split, f, decode, num_classes)


# ------------------------------------------------------------------------------------------------ dataset roots (CLI)
def detect_kind(root: Path) -> str | None:

    if (root / 'annotations').is_dir() and any((root / 'annotations').glob('instances_*.json')):
        return 'coco'
    if (root / 'images').is_dir() or (root / 'annotations' / 'training').is_dir():
        return 'ade'
    if looks_like_imagefolder(root):
        return 'imagenet'
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
            if kind == 'imagenet':
                return len(m['pretrain']['folders'])
            return len(m['ade']['classes_reduce_zero_label'])
        except (KeyError, ValueError, TypeError):
            print(f'[check_dataset] {meta} is not a demo-set description; assuming the real dataset\'s class count')
    return {'coco': 80, 'ade': 150, 'imagenet': 1000}[kind]


def check_root(root: Path, kind: str | None = None, num_classes: int | None = None, decode: bool | None = None,
               json_out: Path | None = None) -> int:
    """tools/check_dataset.py: print every problem of a COCO / ADE20K / ImageNet-format root; 0 when usable, 1
    otherwise. ``decode`` None: each kind's default (COCO / ADE decode the images, ImageNet reads headers: its
    1.3M images would take an hour to decode)."""

    if not root.is_dir():
        print(f'PROBLEM: dataset root {root} does not exist (relative paths are from {Path.cwd()}); '
              f'create it or pass the right path')
        return 1
    kind = kind or detect_kind(root)
    if kind is None:
        hint = (f' ({root} looks like one split of an ImageNet-format tree: pass {root.parent})'
                if root.name in ('train', 'val') and looks_like_imagefolder(root.parent) else '')
        print(f'PROBLEM: {root} looks like neither COCO (annotations/instances_*.json) nor ADE20K (images/training, '
              f'annotations/training) nor ImageNet (train/<class>/, val/<class>/); pass the folder that holds them, '
              f'or --kind{hint}')
        return 1
    decode = kind != 'imagenet' if decode is None else decode
    n = expected_classes(root, kind, num_classes)
    f = Findings()
    if kind == 'imagenet':
        check_imagefolder_root(root, f, num_classes=n, decode=decode)
    else:
        (check_coco_root if kind == 'coco' else check_ade_root)(root, n, f, decode)
    verdict = 'OK' if f.ok() else f'{sum(len(v) for v in f.problems.values())} problems'
    mode = 'images decoded' if decode else 'image headers only'
    print(f'check_dataset: {kind} root {root} (expecting {n} classes, {mode}): {verdict}\n{f.render()}')
    if json_out:
        atomic_write_json(dict(root=str(root), kind=kind, num_classes=n, decode=decode, ok=f.ok(), info=f.info,
                               problems=f.problems), json_out)
    return 0 if f.ok() else 1


# --------------------------------------------------------------------------------------------- a run's datasets
def _leaf_datasets(ds: Any) -> list[dict]:
    """Dataset configs inside wrappers (RepeatDataset, ClassBalancedDataset: ``dataset``; ConcatDataset:
    ``datasets``)."""
    if not isinstance(ds, dict):
        return []
    if isinstance(ds.get('datasets'), list | tuple):
        return [leaf for d in ds['datasets'] for leaf in _leaf_datasets(d)]
    if isinstance(ds.get('dataset'), dict):
        return _leaf_datasets(ds['dataset'])
    return [ds]


def check_run_datasets(cfg: Any, splits: Sequence[str], decode: bool = False) -> list[str]:
    """Check the datasets of ``cfg``'s dataloaders ``splits`` (those present). Raises DatasetError listing the
    problems that stop the run; returns warning lines (annotations mmdet drops, tolerated oddities) and info lines.

    The dataset classes are built with ``lazy_init=True`` so that mmengine / mmdet / mmseg resolve data_root, prefixes,
    suffixes and metainfo exactly as the run will, without loading anything. Classification configs (default_scope
    'mmengine') read ``SdAEImageFolder`` trees, which have no lazy mode: those are checked from the config's
    data_root and split directly (:func:`_check_run_imagefolders`).
    """
    from mmengine.registry import init_default_scope

    scope = cfg.get('default_scope')
    init_default_scope(scope)
    if scope == 'mmengine':
        return _check_run_imagefolders(cfg, splits, decode)
    if scope == 'mmdet':
        from mmdet.datasets import CocoDataset as Coco
        from mmdet.registry import DATASETS
        seg_base = None
    else:
        from mmseg.datasets import BaseSegDataset as seg_base
        from mmseg.registry import DATASETS
        Coco = None
    errors, lines = [], []
    for split in splits:
        loader = cfg.get(split)
        if not isinstance(loader, dict):
            continue
        for ds_cfg in _leaf_datasets(loader.get('dataset')):
            ds = DATASETS.build({**ds_cfg, 'lazy_init': True, 'pipeline': []})
            f = Findings()
            if Coco is not None and isinstance(ds, Coco) and str(ds.ann_file).endswith('.json'):
                ann = Path(ds.ann_file)
                if not ann.is_file():
                    f.add('missing annotation file', f'{ann} not found ({split}.dataset.ann_file, joined to data_root)')
                else:
                    check_coco_file(ann, Path(ds.data_prefix.get('img', '')), f, decode,
                                    classes=list(ds.metainfo['classes']))
            elif seg_base is not None and isinstance(ds, seg_base):
                names = None
                if ds.ann_file and not Path(ds.ann_file).is_dir():  # mmseg: a list of names, one a line
                    if not Path(ds.ann_file).is_file():
                        f.add('missing annotation file', f'{ds.ann_file} not found ({split}.dataset.ann_file)')
                        names = []
                    else:
                        names = [ln.strip() for ln in Path(ds.ann_file).read_text().splitlines() if ln.strip()]
                prefix = ds.data_prefix
                check_seg_folders(Path(prefix.get('img_path', '')), Path(prefix.get('seg_map_path', '')), f, decode,
                                  len(ds.metainfo['classes']), ds.img_suffix, ds.seg_map_suffix,
                                  ds.reduce_zero_label, ds.ignore_index, names)
            else:
                lines.append(f'{split}: {type(ds).__name__} is not a COCO or segmentation-folder dataset: not checked')
                continue
            lines += [f'{split}: {m}' for m in f.info] + f.warnings(split)
            if f.errors():
                errors.append(f'{split} ({type(ds).__name__}):\n{f.render(f.errors(), info=False)}')
    if errors:
        raise DatasetError('the data has problems that stop the run (the same checks as tools/check_dataset.py):\n'
                           + '\n'.join(errors))
    return lines


def _check_run_imagefolders(cfg: Any, splits: Sequence[str], decode: bool) -> list[str]:
    """The ImageNet-format checks on each data_root the dataloaders ``splits`` read (once per root, its splits
    together, so that train and val are compared), expecting ``model.num_classes`` classes."""

    lines: list[str] = []
    roots: dict[str, list[tuple[str, str]]] = {}  # data_root -> [(dataloader, split)]
    for loader_key in splits:
        loader = cfg.get(loader_key)
        if not isinstance(loader, dict):
            continue
        for ds_cfg in _leaf_datasets(loader.get('dataset')):
            kind = ds_cfg.get('type')
            name = kind if isinstance(kind, str) else getattr(kind, '__name__', repr(kind))
            if name.split('.')[-1] != 'SdAEImageFolder':
                lines.append(f'{loader_key}: {name} is not an SdAEImageFolder dataset: not checked')
                continue
            if not ds_cfg.get('data_root'):
                raise DatasetError(f'{loader_key}.dataset ({name}) has no data_root; set it to the folder that holds '
                                   f'train/<class>/ and val/<class>/')
            roots.setdefault(str(ds_cfg['data_root']), []).append((loader_key, str(ds_cfg.get('split', 'train'))))
    model = cfg.get('model')
    num_classes = model.get('num_classes') if isinstance(model, dict) else None
    errors = []
    for root, uses in roots.items():
        f = Findings()
        check_imagefolder_root(Path(root), f, num_classes=num_classes, decode=decode,
                               splits=list(dict.fromkeys(split for _, split in uses)),
                               num_classes_source='model.num_classes')
        where = '+'.join(dict.fromkeys(key for key, _ in uses))
        lines += [f'{where}: {m}' for m in f.info]
        if f.errors():
            errors.append(f'{where} (SdAEImageFolder, data_root {root}):\n{f.render(f.errors(), info=False)}')
    if errors:
        raise DatasetError('the data has problems that stop the run (the same checks as tools/check_dataset.py '
                           '--kind imagenet):\n' + '\n'.join(errors))
    return lines
