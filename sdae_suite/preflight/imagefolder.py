"""ImageNet-format class folders (``ROOT/{train,val}/<class>/<image>``, what ``SdAEImageFolder`` reads): the checks of
``tools/check_dataset.py --kind imagenet`` and of the start of every classification run, reported through
preflight/findings.py's ``Findings`` so that both print the same messages.

What is checked, and why:
- ``train/`` and ``val/`` exist and hold class folders. Images lying directly in a split folder are an error: the
  dataset reads only ``<class>/`` sub-folders, so an unsorted (or half-sorted) ImageNet val would silently shrink.
- Every split holds the same class set. Classes are the sorted folder names (torchvision ``ImageFolder``), so one
  folder missing from a split shifts every later label of that split: accuracy near chance, and no error anywhere.
- The class count is the expected one (a run: ``model.num_classes``; the CLI: ``--num-classes``, 1000 by default):
  a head of the wrong width either fails at the first batch or never predicts some classes.
- No class folder is empty (torchvision's ImageFolder refuses them; here it would be a class with no samples).
- Every image is readable. By default only the header is parsed (PIL opens lazily: format and size, no pixels) and,
  for JPEG and PNG, the last 64 bytes must hold the end marker (JPEG ``FFD9``, PNG ``IEND``; zero or whitespace
  padding after it is allowed): a truncated download or copy lacks it. A file without its marker is then decoded to
  confirm, so a file the run reads fine (data appended after the image) is never reported. Measured on a 2-core
  machine (warm page cache): about 0.1 ms a file, i.e. seconds for tens of thousands of files and a few minutes for
  ImageNet's 1.33M; threads overlap the file I/O of cold or network storage. ``decode=True`` decodes every image the
  way the run does (``convert('RGB')``) and so also catches corrupt compressed data behind a valid header and end
  marker, at several ms per ImageNet-sized JPEG.

Unreadable images are errors, at the CLI and at a run's start alike, as undecodable images are in the COCO / ADE
checks: during training the dataset would skip each with a warning and read the next image in its place, so the run
would survive but train and evaluate on other data than the folder holds. The message names every file (the first
ten, and the count) and the fix: remove or replace them.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from sdae_suite.contracts import IMAGE_EXTENSIONS
from sdae_suite.preflight.findings import MAX_LISTED, Findings

IMAGENET_SPLITS = ('train', 'val')
IMAGENET_CLASSES = 1000
LAYOUT = 'ROOT/train/<class>/*.JPEG and ROOT/val/<class>/*.JPEG (torchvision ImageFolder layout)'
END_MARKERS = {'JPEG': b'\xff\xd9', 'MPO': b'\xff\xd9', 'PNG': b'IEND\xaeB`\x82'}  # PIL format -> last bytes
TAIL_BYTES = 64
PADDING = b'\x00 \t\r\n'  # allowed after the end marker (some writers pad files to a block size)
PROGRESS_MIN_FILES = 20_000  # smaller trees are checked in seconds: no progress lines
PROGRESS_EVERY_S = 5.0
BATCH = 256  # files per thread-pool task: few futures even for 1.3M files

ProgressFn = Callable[[int, int, float], None]  # (files done, files in all, seconds so far)


@dataclass
class SplitTree:
    """One split folder as ``SdAEImageFolder`` reads it, plus what it would ignore (reported, never dropped)."""
    path: Path
    classes: list[str] = field(default_factory=list)
    images: dict[str, list[Path]] = field(default_factory=dict)  # class -> image files, recursively, sorted
    loose: list[Path] = field(default_factory=list)  # image files directly in the split folder: not read
    other: list[Path] = field(default_factory=list)  # files in class folders without an image extension: not read

    @property
    def num_images(self) -> int:
        return sum(map(len, self.images.values()))


def scan_split(split_dir: Path) -> SplitTree:
    """The classes and files of one split with the rules of ``sdae_suite.classification.dataset.scan_split`` (sorted
    folder names; files found recursively, links followed, extension in IMAGE_EXTENSIONS, any case)."""
    tree = SplitTree(split_dir)
    entries = sorted(os.scandir(split_dir), key=lambda e: e.name)
    tree.classes = [e.name for e in entries if e.is_dir()]
    tree.loose = [Path(e.path) for e in entries if not e.is_dir() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
    for name in tree.classes:
        files: list[Path] = []
        for d, _, names in sorted(os.walk(split_dir / name, followlinks=True)):
            for n in sorted(names):
                (files if n.lower().endswith(IMAGE_EXTENSIONS) else tree.other).append(Path(d) / n)
        tree.images[name] = files
    return tree


def _has_end_marker(fh, marker: bytes) -> bool:
    size = fh.seek(0, os.SEEK_END)
    fh.seek(max(0, size - TAIL_BYTES))
    return fh.read().rstrip(PADDING).endswith(marker)


def image_problem(path: Path, decode: bool = False) -> str | None:
    """Why a run could not read ``path`` (None: it can). Headers only unless ``decode``; see the module docstring."""
    try:
        with open(path, 'rb') as fh, Image.open(fh) as im:
            if decode:
                im.convert('RGB')  # what SdAEImageFolder.__getitem__ does
                return None
            marker = END_MARKERS.get(im.format or '')
            if marker is None or _has_end_marker(fh, marker):
                return None
            fmt = im.format
    except UnidentifiedImageError:
        if path.is_file() and path.stat().st_size == 0:
            return 'empty file (0 bytes)'
        return 'not an image PIL can identify (another format under an image extension, or garbage)'
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error ... on bad files
        return f'{"cannot be decoded" if decode else "unreadable header"} ({type(e).__name__}: {e})'
    why = image_problem(path, decode=True)  # no end marker: does the run's decoding still succeed?
    return None if why is None else f'truncated {fmt}: no end marker ({END_MARKERS[fmt].hex(" ")}) in its last ' \
                                    f'{TAIL_BYTES} bytes, and it {why}'


def stderr_progress(label: str) -> ProgressFn:
    """Progress lines with rate and ETA on stderr, at most one per PROGRESS_EVERY_S seconds, and the last one."""
    last = [0.0]

    def report(done: int, total: int, elapsed: float) -> None:
        if done < total and elapsed - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = elapsed
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        print(f'[check_dataset] {label}: {done}/{total} files ({100 * done / total:.0f} %), {rate:.0f} files/s, '
              f'{"done in" if done == total else "ETA"} {_duration(elapsed if done == total else eta)}',
              file=sys.stderr, flush=True)
    return report


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f'{m} min {s} s' if m else f'{s} s'


def check_images(paths: Sequence[Path], decode: bool = False, progress: ProgressFn | None = None,
                 label: str = 'images') -> list[tuple[Path, str]]:
    """(path, why) for every unreadable file of ``paths``, in path order. Threads overlap the reads (PIL releases the
    GIL for file I/O and decoding). ``progress`` is called after every batch of files; without it, trees of more than
    PROGRESS_MIN_FILES files print progress with an ETA on stderr."""
    if progress is None and len(paths) > PROGRESS_MIN_FILES:
        progress = stderr_progress(f'{label} ({"full decode" if decode else "headers"})')
    batches = [paths[i:i + BATCH] for i in range(0, len(paths), BATCH)]
    run = lambda batch: [(p, why) for p in batch if (why := image_problem(p, decode)) is not None]
    found: list[tuple[Path, str]] = []
    start, done = time.monotonic(), 0
    with ThreadPoolExecutor(max_workers=min(16, 4 * (os.cpu_count() or 1))) as pool:
        futures = {pool.submit(run, b): len(b) for b in batches}
        for fut in as_completed(futures):
            found += fut.result()
            done += futures[fut]
            if progress is not None:
                progress(done, len(paths), time.monotonic() - start)
    return sorted(found)


def _first(names: Sequence[str], n: int = 2 * MAX_LISTED) -> str:
    return ', '.join(names[:n]) + (f' ... and {len(names) - n} more' if len(names) > n else '')


def check_imagefolder_root(root: Path, f: Findings, num_classes: int | None = None, decode: bool = False,
                           splits: Sequence[str] = IMAGENET_SPLITS, num_classes_source: str = '--num-classes',
                           progress: ProgressFn | None = None) -> dict[str, SplitTree]:
    """Add to ``f`` every problem of the ImageNet-format tree ``root`` (its ``splits``; the first is the reference for
    the class sets) and one info line per split plus the time taken. ``num_classes``: the expected class count (None:
    not checked), named in the message as ``num_classes_source``. Returns the scanned splits."""
    start = time.monotonic()
    trees: dict[str, SplitTree] = {}
    for split in splits:
        d = root / split
        if not d.is_dir():
            f.add('missing split folder', f'{d}: not found. Expected {LAYOUT.replace("ROOT", str(root))}; pass the '
                                          f'folder that holds train/ and val/')
            continue
        tree = scan_split(d)
        if not tree.classes:
            loose = f' but {len(tree.loose)} images directly in it' if tree.loose else ''
            f.add('no class folders', f'{d}: no class sub-folders{loose}. '
                                      f'Expected {d}/<class>/<image>; ImageNet val must be sorted into its 1000 class '
                                      f'folders too (e.g. with the ILSVRC2012 val ground truth)')
            continue
        trees[split] = tree
        if tree.loose:
            f.add('images outside class folders', f'{d}: {len(tree.loose)} images lie directly here (first: '
                                                  f'{_first([p.name for p in tree.loose], 3)}); the dataset reads only '
                                                  f'{d}/<class>/ sub-folders. Move them into their class folders')
        empty = [c for c in tree.classes if not tree.images[c]]
        for c in empty:
            f.add('empty class folders', f'{d / c}: no image files ({", ".join(IMAGE_EXTENSIONS)}); add its images or '
                                         f'remove the folder in every split')
    if trees:
        ref_split, ref = next(iter(trees.items()))
        for split, tree in list(trees.items())[1:]:
            for missing_in, have, lack in ((split, ref, tree), (ref_split, tree, trees[ref_split])):
                missing = sorted(set(have.classes) - set(lack.classes))
                if missing:
                    f.add(f'classes missing from {missing_in}',
                          f'{lack.path}: {len(missing)} class folders of {have.path} are missing here: '
                          f'{_first(missing)}. Classes are the sorted folder names, so the labels of {ref_split} and '
                          f'{split} would not match; give both splits the same class folders')
        if num_classes is not None and len(ref.classes) != num_classes:
            f.add('class count', f'{ref.path}: {len(ref.classes)} class folders, expected {num_classes} '
                                 f'({num_classes_source}); point at the full dataset, or set {num_classes_source} to '
                                 f'{len(ref.classes)} if the subset is meant')
    paths = [p for tree in trees.values() for files in tree.images.values() for p in files]
    for path, why in check_images(paths, decode, progress, label=str(root)):
        f.add('unreadable images', f'{path}: {why}. Remove or replace it (a run would skip it with a warning and '
                                   f'read the next image in its place)')
    for tree in trees.values():
        f.info.append(f'imagenet: {tree.path} - {len(tree.classes)} classes, {tree.num_images} images')
        if tree.other:
            f.info.append(f'imagenet: {tree.path} - {len(tree.other)} files without an image extension are not read '
                          f'(first: {_first([str(p) for p in tree.other], 3)})')
    mode = 'decoded' if decode else 'headers and end markers'
    f.info.append(f'imagenet: {root} - {len(paths)} images checked ({mode}) in {time.monotonic() - start:.1f} s')
    return trees


def looks_like_imagefolder(root: Path) -> bool:
    """``root`` holds train/ or val/ with class sub-folders (tools/check_dataset.py's layout detection)."""
    for split in IMAGENET_SPLITS:
        d = root / split
        if d.is_dir() and any(e.is_dir() for e in os.scandir(d)):
            return True
    return False
