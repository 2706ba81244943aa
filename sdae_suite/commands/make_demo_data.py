"""Write the embedded demo data set: no download needed to run the whole suite.

    python tools/make_demo_data.py --out data/demo --seed 0

Layout (all images are procedural scenes from sdae_suite/demodata/scenes.py, one generator for the three sets):
    pretrain/train/<folder>/<name>.jpg                  unlabeled pool, 128x128, object-centric (one large object near
                                                        the centre + 1-4 others), ImageNet-style folders (the folder is
                                                        the class of the largest visible object: the probes' labels)
    pretrain/val/<folder>/<name>.jpg                    held-out images of the same kind: with pretrain/train an
                                                        ImageNet-format tree for fine-tuning and linear probing
    coco/{train,val}/*.jpg, coco/annotations/instances_{train,val}.json
                                                        instance segmentation, categories 1..6 = CLASSES, exact polygons
    ade/images/{training,validation}/*.jpg, ade/annotations/{training,validation}/*.png
                                                        semantic label maps, 0 other (reduce_zero_label), 1 ground,
                                                        2 sky, 3..8 the object classes
    meta.json                                           written last: its presence marks a complete set

Every file is a pure function of (seed, split, index): the same seed gives identical bytes whatever --workers is.
The set is built in `<out>.partial` and renamed into place, so an interrupted run never looks complete; `<out>.lock`
serialises concurrent runs on the same folder.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from sdae_suite.demodata.scenes import CLASSES, SEMANTIC_CLASSES, mask_to_polygons, render_scene

VERSION = 3  # bump when the generator's output changes, so existing sets are regenerated
JPEG_QUALITY = 90
PRETRAIN_SIZE = 128
SCENE_SIZE = (224, 288)  # COCO / ADE images: height and width drawn independently from this range
MIN_VISIBLE_AREA = 24  # pixels (at 256 px); smaller visible remnants of occluded objects are not annotated
# Split ids feed the per-image seed np.random.default_rng([seed, split_id, index]).
SPLITS = {'pretrain': 0, 'coco_train': 1, 'coco_val': 2, 'ade_training': 3, 'ade_validation': 4, 'pretrain_val': 5}


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f'could not encode {path}')
    path.write_bytes(buf.tobytes())


def _scene_rng(seed: int, split: str, index: int) -> tuple[np.random.Generator, int, int]:
    rng = np.random.default_rng([seed, SPLITS[split], index])
    return rng, int(rng.integers(SCENE_SIZE[0], SCENE_SIZE[1] + 1)), int(rng.integers(SCENE_SIZE[0], SCENE_SIZE[1] + 1))


def make_pretrain_image(task: tuple[Path, int, int, str]) -> str:
    """Render pool image `index` of `split` ('pretrain' or 'pretrain_val') into <root>/<folder>/; returns its path
    relative to root."""
    root, seed, index, split = task
    rng = np.random.default_rng([seed, SPLITS[split], index])
    scene = render_scene(rng, PRETRAIN_SIZE, PRETRAIN_SIZE, int(rng.integers(2, 6)), focus=True)
    areas = [m.sum() for _, m in scene.objects]
    folder = CLASSES[scene.objects[int(np.argmax(areas))][0] - 1]
    rel = f'{folder}/{folder}_{index:05d}.jpg'
    (root / folder).mkdir(exist_ok=True)  # only folders that get images: torchvision's ImageFolder rejects empty ones
    _write_jpeg(root / rel, scene.image)
    return rel


def make_coco_image(task: tuple[Path, int, str, int]) -> tuple[dict, list[dict]]:
    """Render COCO image `index`; returns its image record and annotations (ids filled in by the caller)."""
    root, seed, split, index = task
    rng, h, w = _scene_rng(seed, f'coco_{split}', index)
    scene = render_scene(rng, h, w, int(rng.integers(4, 10)))
    name = f'{split}_{index:06d}.jpg'
    _write_jpeg(root / split / name, scene.image)
    min_area = MIN_VISIBLE_AREA * h * w / 256**2
    anns = []
    for category_id, visible in scene.objects:
        if visible.sum() < min_area:
            continue
        polygons = mask_to_polygons(visible)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
        # The polygons are exact by construction (see mask_to_polygons); check it, since `area` must be the mask area.
        if not np.array_equal(mask_utils.decode(rle).astype(bool), visible):
            raise RuntimeError(f'internal error: polygons of {name} do not reproduce the mask')
        anns.append(dict(category_id=category_id, segmentation=polygons, area=int(mask_utils.area(rle)),
                         bbox=[float(x) for x in mask_utils.toBbox(rle)], iscrowd=0))
    return dict(file_name=name, height=h, width=w), anns


def make_ade_image(task: tuple[Path, int, str, int]) -> tuple[str, np.ndarray]:
    """Render ADE image `index`; returns its stem and per-id pixel counts [9]."""
    root, seed, split, index = task
    rng, h, w = _scene_rng(seed, f'ade_{split}', index)
    scene = render_scene(rng, h, w, int(rng.integers(4, 10)))
    stem = f'ADE_{"train" if split == "training" else "val"}_{index:08d}'
    _write_jpeg(root / 'images' / split / f'{stem}.jpg', scene.image)
    if not cv2.imwrite(str(root / 'annotations' / split / f'{stem}.png'), scene.semantic):
        raise RuntimeError(f'could not write {stem}.png')
    return stem, np.bincount(scene.semantic.ravel(), minlength=len(SEMANTIC_CLASSES))


def _run(pool: multiprocessing.pool.Pool | None, fn, tasks: list, label: str) -> list:
    """Map `fn` over `tasks` in order, printing progress with ETA."""
    results, start, step = [], time.time(), max(1, len(tasks) // 5)
    mapped = pool.imap(fn, tasks, chunksize=8) if pool is not None else map(fn, tasks)
    for i, result in enumerate(mapped, 1):
        results.append(result)
        if i % step == 0 or i == len(tasks):
            elapsed = time.time() - start
            print(f'[demo-data] {label}: {i}/{len(tasks)}  {elapsed:.1f} s, ETA {elapsed / i * (len(tasks) - i):.1f} s',
                  flush=True)
    return results


def _coco_json(images: list[dict], anns_per_image: list[list[dict]]) -> dict:
    ann_id, annotations = 1, []
    for image_id, (image, anns) in enumerate(zip(images, anns_per_image), 1):
        image['id'] = image_id
        for ann in anns:
            annotations.append(dict(id=ann_id, image_id=image_id, **ann))
            ann_id += 1
    return dict(info=dict(description='sdae-suite procedural demo set', version=str(VERSION)), licenses=[],
                images=images, annotations=annotations,
                categories=[dict(id=i, name=c, supercategory='shape') for i, c in enumerate(CLASSES, 1)])


def params_of(args: argparse.Namespace) -> dict:
    """The settings that define a set's content: equal params + seed + version mean identical files."""
    return dict(num_pretrain=args.num_pretrain, num_pool_val=args.num_pool_val, num_train=args.num_train,
                num_val=args.num_val,
                pretrain_size=PRETRAIN_SIZE, scene_size=list(SCENE_SIZE), jpeg_quality=JPEG_QUALITY)


def expected_files(params: dict) -> dict[str, int]:
    """Number of files each folder of a complete set holds (pretrain counted over its class folders)."""
    n_train, n_val = params['num_train'], params['num_val']
    return {'pretrain/train': params['num_pretrain'], 'pretrain/val': params['num_pool_val'],
            'coco/train': n_train, 'coco/val': n_val,
            'coco/annotations': 2, 'ade/images/training': n_train, 'ade/images/validation': n_val,
            'ade/annotations/training': n_train, 'ade/annotations/validation': n_val}


def is_complete(out: Path, seed: int, params: dict) -> bool:
    """True when `out` holds a finished set of this seed, version and params, with all its files present."""
    try:
        meta = json.loads((out / 'meta.json').read_text())
    except (OSError, ValueError):
        return False
    if (meta.get('version'), meta.get('seed'), meta.get('params')) != (VERSION, seed, params):
        return False
    for folder, count in expected_files(params).items():
        files = [p for p in (out / folder).rglob('*') if p.is_file()] if (out / folder).is_dir() else []
        if len(files) != count:
            return False
    return True


def generate(out: Path, seed: int, params: dict, workers: int) -> dict:
    """Build the whole set in `<out>.partial`, then move it to `out`. Returns meta."""
    stage = out.with_name(out.name + '.partial')
    if stage.exists():
        shutil.rmtree(stage)  # leftovers of an interrupted run
    splits = {'train': params['num_train'], 'val': params['num_val']}
    ade_splits = {'training': params['num_train'], 'validation': params['num_val']}
    for d in ['pretrain/train', 'pretrain/val', 'coco/annotations', *[f'coco/{s}' for s in splits],
              *[f'ade/{kind}/{s}' for kind in ('images', 'annotations') for s in ade_splits]]:
        (stage / d).mkdir(parents=True)

    start = time.time()
    pool = None
    if workers > 1:  # one OpenCV thread per process: the processes already use every core
        pool = multiprocessing.get_context('fork').Pool(workers, initializer=cv2.setNumThreads, initargs=(1,))
    try:
        pool_files = _run(pool, make_pretrain_image,
                          [(stage / 'pretrain/train', seed, i, 'pretrain') for i in range(params['num_pretrain'])],
                          'pretrain pool')
        val_files = _run(pool, make_pretrain_image,
                         [(stage / 'pretrain/val', seed, i, 'pretrain_val') for i in range(params['num_pool_val'])],
                         'pool val')
        coco = {}
        for split, n in splits.items():
            results = _run(pool, make_coco_image, [(stage / 'coco', seed, split, i) for i in range(n)], f'coco {split}')
            data = _coco_json([r[0] for r in results], [r[1] for r in results])
            (stage / f'coco/annotations/instances_{split}.json').write_text(json.dumps(data))
            coco[split] = dict(img_dir=f'coco/{split}', ann_file=f'coco/annotations/instances_{split}.json',
                               num_images=n, num_instances=len(data['annotations']),
                               instances_per_class={c: sum(a['category_id'] == i for a in data['annotations'])
                                                    for i, c in enumerate(CLASSES, 1)})
        ade = {}
        for split, n in ade_splits.items():
            results = _run(pool, make_ade_image, [(stage / 'ade', seed, split, i) for i in range(n)], f'ade {split}')
            pixels = np.sum([r[1] for r in results], axis=0)
            ade[split] = dict(img_dir=f'ade/images/{split}', ann_dir=f'ade/annotations/{split}', num_images=n,
                              pixel_fraction={c: round(float(p / pixels.sum()), 4)
                                              for c, p in zip(SEMANTIC_CLASSES, pixels)})
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    folders = sorted({f.split('/')[0] for f in pool_files})
    meta = dict(
        format='sdae-suite/demo-data', version=VERSION, seed=seed, params=params,
        # Same seed + same versions -> identical bytes; other OpenCV/numpy builds may encode JPEGs differently.
        generated_with=dict(opencv=cv2.__version__, numpy=np.__version__),
        pretrain=dict(root='pretrain/train', num_images=len(pool_files), image_size=[PRETRAIN_SIZE, PRETRAIN_SIZE],
                      folders=folders, images_per_folder={f: sum(p.startswith(f + '/') for p in pool_files)
                                                          for f in folders},
                      folder_meaning='class of the largest visible object; self-supervised pretraining ignores it'),
        pretrain_val=dict(root='pretrain/val', num_images=len(val_files),
                          images_per_folder={f: sum(p.startswith(f + '/') for p in val_files)
                                             for f in sorted({f.split('/')[0] for f in val_files})},
                          use='held-out split of the pool for ImageNet-style fine-tuning and linear probing'),
        coco=dict(classes=list(CLASSES), category_ids=list(range(1, len(CLASSES) + 1)),
                  image_size_range=list(SCENE_SIZE), min_visible_area_at_256px=MIN_VISIBLE_AREA, **coco),
        ade=dict(label_ids={str(i): c for i, c in enumerate(SEMANTIC_CLASSES)},
                 classes_reduce_zero_label=list(SEMANTIC_CLASSES[1:]), reduce_zero_label=True,
                 image_size_range=list(SCENE_SIZE), **ade),
    )
    # meta.json last: only a finished set has one.
    (stage / 'meta.json').write_text(json.dumps(meta, indent=2) + '\n')
    if out.exists():
        shutil.rmtree(out)
    os.replace(stage, out)
    print(f'[demo-data] wrote {out} in {time.time() - start:.1f} s with {workers} worker(s)', flush=True)
    return meta


def check_out_dir(out: Path) -> None:
    """Refuse to replace a folder that is not a demo set: --out may point at something the user cares about."""
    if not out.exists():
        return
    if not out.is_dir():
        sys.exit(f'error: --out {out} is a file; pass a folder path (e.g. data/demo)')
    ours = {'meta.json', 'pretrain', 'coco', 'ade'}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if foreign:
        sys.exit(f'error: --out {out} holds files that are not demo data ({", ".join(foreign[:5])}); '
                 f'pass an empty or new folder, or remove it first')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', type=Path, default=Path('data/demo'), help='output folder (default data/demo)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-pretrain', type=int, default=2400, help='unlabeled pool size (>= 2000 by default)')
    parser.add_argument('--num-pool-val', type=int, default=600,
                        help='held-out pool images (pretrain/val: classification validation)')
    parser.add_argument('--num-train', type=int, default=160, help='COCO and ADE training images each')
    parser.add_argument('--num-val', type=int, default=40, help='COCO and ADE validation images each')
    parser.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                        help='processes (default: all cores); the output does not depend on it')
    parser.add_argument('--force', action='store_true', help='regenerate even if --out already holds this set')
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ('num_pretrain', 'num_pool_val', 'num_train', 'num_val', 'workers'):
        if getattr(args, name) < 1:
            sys.exit(f'error: --{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if args.seed < 0:
        sys.exit(f'error: --seed must be >= 0 (it seeds numpy generators), got {args.seed}')
    params = params_of(args)
    print(f'[demo-data] out={args.out} seed={args.seed} version={VERSION} workers={args.workers} '
          f'pool={args.num_pretrain}+{args.num_pool_val} val x{PRETRAIN_SIZE}px '
          f'coco/ade train={args.num_train} val={args.num_val} '
          f'scene size {SCENE_SIZE[0]}-{SCENE_SIZE[1]}px', flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Several `make data` / test runs may target the same folder at once: the second waits, then finds the set done.
    with open(args.out.with_name(args.out.name + '.lock'), 'w') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f'[demo-data] another make_demo_data.py is writing {args.out}; waiting for it', flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not args.force and is_complete(args.out, args.seed, params):
            print(f'[demo-data] {args.out} already holds the complete set (seed {args.seed}, version {VERSION}); '
                  f'nothing to do (--force regenerates it)', flush=True)
            return 0
        check_out_dir(args.out)
        if (args.out / 'meta.json').is_file():
            print(f'[demo-data] replacing the set in {args.out} (other seed, params or version, or incomplete)')
        generate(args.out, args.seed, params, args.workers)
    return 0

if __name__ == '__main__':
    sys.exit(main())
