"""Labelled data of the probes, read into memory as fixed-size uint8 tensors.

- classification: ImageNet-style class folders (root/<class>/<image>). One folder is split deterministically into
  train / held-out by position in each class's sorted file list (every ``held_out_every``-th file is held out); or two
  folders (train, val) are given.
- segmentation: an ADE20K-format folder (images/{training,validation}/*.jpg, annotations/{...}/*.png label maps, 0 =
  "other", reduced to the ignore index 255 as mmseg's ``reduce_zero_label`` does).

Images are resized to a square ``size`` (no crop, so a prediction upsampled back to the original label map covers it
exactly); label maps are kept at their original size for scoring and also resized (nearest) for training.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sdae_suite.contracts import IMAGE_EXTENSIONS

IGNORE_INDEX = 255


class ProbeDataError(ValueError):
    """The probe data folder does not have the expected layout; the message names the folder and the fix."""


@dataclass
class ClassSplit:
    classes: list[str]
    train: list[tuple[str, int]]  # (path, label)
    test: list[tuple[str, int]]


def _class_files(root: Path) -> dict[str, list[str]]:
    if not root.is_dir():
        raise ProbeDataError(f'{root}: classification probe data folder not found (pass an ImageNet-style folder '
                             f'root/<class>/<image>, e.g. data/demo/pretrain/train)')
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith('.')):
        files = sorted(str(Path(dp) / f) for dp, _, names in os.walk(d, followlinks=True) for f in names
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        if files:
            out[d.name] = files
    if len(out) < 2:
        raise ProbeDataError(f'{root}: found {len(out)} class folder(s) with images; the classification probes need '
                             f'an ImageNet-style folder with at least 2 classes (root/<class>/<image>)')
    return out


def class_split(root: str | os.PathLike, val_root: str | os.PathLike | None = None, held_out_every: int = 5,
                max_train_per_class: int | None = None, max_test_per_class: int | None = None) -> ClassSplit:
    """Deterministic train / held-out lists. ``val_root`` given: train = ``root``, test = ``val_root`` (same class
    names). Otherwise file i of each class (sorted) is held out when ``i % held_out_every == held_out_every - 1``.
    ``max_*_per_class``: the first n of each list (small subsets for the probes during pretraining)."""
    files = _class_files(Path(root))
    classes = sorted(files)
    if val_root is not None:
        val = _class_files(Path(val_root))
        unknown = sorted(set(val) - set(classes))
        if unknown:
            raise ProbeDataError(f'{val_root}: class folders {unknown} are not in the training folder {root}; the two '
                                 f'folders must use the same class names')
        train = {c: files[c] for c in classes}
        test = {c: val.get(c, []) for c in classes}
    else:
        if held_out_every < 2:
            raise ProbeDataError(f'held_out_every must be >= 2, got {held_out_every}')
        last = held_out_every - 1
        train = {c: [f for i, f in enumerate(fs) if i % held_out_every != last] for c, fs in files.items()}
        test = {c: [f for i, f in enumerate(fs) if i % held_out_every == last] for c, fs in files.items()}
    pick = lambda d, n: [(f, classes.index(c)) for c in classes for f in d[c][:n]]  # noqa: E731
    return ClassSplit(classes, pick(train, max_train_per_class), pick(test, max_test_per_class))


def read_rgb(path: str, size: int | None = None) -> torch.Tensor:
    """-> uint8 [3, H, W], or [3, size, size] resized with PIL's bicubic filter (antialiased when shrinking, like the
    pretraining crops; PIL is ~50x faster than a per-image torch interpolate here)."""
    try:
        with Image.open(path) as im:
            im = im.convert('RGB')
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BICUBIC)
            arr = np.asarray(im)
    except Exception as e:  # PIL raises many types for a bad file
        raise ProbeDataError(f'{path}: cannot read this image ({type(e).__name__}: {e}); remove or replace it'
                             ) from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def load_images(paths: list[str], size: int) -> torch.Tensor:
    """-> uint8 [N, 3, size, size] (resized to a square, no crop)."""
    return torch.stack([read_rgb(p, size) for p in paths]) if paths else \
        torch.zeros(0, 3, size, size, dtype=torch.uint8)


@dataclass
class SegSet:
    images: torch.Tensor  # uint8 [N, 3, S, S]
    labels: torch.Tensor  # int64 [N, S, S], nearest-resized, ignore = 255
    full_labels: list[torch.Tensor]  # int64 [H_i, W_i] at the original size, ignore = 255
    files: list[str]


def seg_files(root: str | os.PathLike, split: str) -> list[tuple[str, str]]:
    root = Path(root)
    img_dir, ann_dir = root / 'images' / split, root / 'annotations' / split
    if not img_dir.is_dir() or not ann_dir.is_dir():
        raise ProbeDataError(f'{root}: expected an ADE20K-format folder with images/{split}/ and annotations/{split}/ '
                             f'(e.g. data/demo/ade or ADEChallengeData2016)')
    pairs = []
    for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
        ann = ann_dir / (img.stem + '.png')
        if not ann.is_file():
            raise ProbeDataError(f'{img}: no label map {ann}; every image needs annotations/{split}/<stem>.png')
        pairs.append((str(img), str(ann)))
    if not pairs:
        raise ProbeDataError(f'{img_dir}: no images')
    return pairs


def read_label(path: str, reduce_zero_label: bool = True) -> torch.Tensor:
    """-> int64 [H, W]; with ``reduce_zero_label`` 0 becomes 255 (ignored) and k becomes k - 1 (mmseg's rule)."""
    with Image.open(path) as im:
        lab = torch.from_numpy(np.asarray(im).astype(np.int64))
    if lab.ndim != 2:
        raise ProbeDataError(f'{path}: a label map must be a single-channel PNG, got shape {tuple(lab.shape)}')
    if reduce_zero_label:
        lab = torch.where(lab == 0, IGNORE_INDEX, lab - 1)
        lab[lab == IGNORE_INDEX - 1] = IGNORE_INDEX  # 255 - 1 stays ignored, as in mmseg
    return lab


def load_seg(root: str | os.PathLike, split: str, size: int, max_images: int | None = None,
             reduce_zero_label: bool = True) -> SegSet:
    pairs = seg_files(root, split)[:max_images]
    images = load_images([i for i, _ in pairs], size)
    full = [read_label(a, reduce_zero_label) for _, a in pairs]
    small = torch.stack([F.interpolate(lab[None, None].float(), size=(size, size), mode='nearest')[0, 0].long()
                         for lab in full])
    return SegSet(images, small, full, [i for i, _ in pairs])
