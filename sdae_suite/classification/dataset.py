"""ImageNet-format class folders (``<data_root>/<split>/<class>/<image>``, torchvision ``ImageFolder``'s layout) for
fine-tuning and linear probing; registered in mmengine's DATASETS as ``SdAEImageFolder``.

Classes are the sorted folder names of the split (ImageFolder's ``class_to_idx``), so the labels of ``train`` and
``val`` agree whenever both hold the same class set -- checked at the door (``sdae_suite.preflight.imagefolder``) and
again here. A file that cannot be decoded during a run is skipped with a warning naming it: the next image of the
split takes its place and the skip is counted (``num_skipped``; ``SkippedImagesHook`` sums and logs it), so one bad
JPEG never ends a 100-epoch run.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from mmengine.logging import print_log
from mmengine.registry import DATASETS
from PIL import Image
from torch.utils.data import Dataset

from sdae_suite.contracts import IMAGE_EXTENSIONS

from .transforms import build_transform


class ImageFolderError(RuntimeError):
    """The folder tree is not ImageNet-format; the message names the folder and the fix."""


def scan_split(root: str | os.PathLike) -> tuple[list[str], list[tuple[str, int]]]:
    """(sorted class names, [(image path, class index)]) of ``root/<class>/<image>``; files sorted within a class."""
    root = Path(root)
    if not root.is_dir():
        raise ImageFolderError(f'{root}: folder not found. Expected the ImageNet layout <data_root>/train/<class>/'
                               f'*.JPEG and <data_root>/val/<class>/*.JPEG (set the dataset data_root, or run '
                               f'`make data` for the embedded demo set)')
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
    if not classes:
        raise ImageFolderError(f'{root}: no class folders. Expected {root}/<class>/<image> (torchvision ImageFolder '
                               f'layout; ImageNet val must be sorted into class folders too)')
    samples = []
    for index, name in enumerate(classes):
        for d, _, files in sorted(os.walk(root / name, followlinks=True)):
            samples += [(str(Path(d) / f), index) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return classes, samples


@DATASETS.register_module()
class SdAEImageFolder(Dataset):
    """Args:
        data_root: the folder holding ``train/`` and ``val/``.
        split: 'train' or 'val' (any sub-folder name).
        transform: ``dict(type='finetune' | 'linprobe' | 'eval', ...)`` (:mod:`.transforms`).
        classes: the expected class folders (e.g. the training split's); None: whatever the split holds.

    A sample is ``dict(inputs=[3, S, S] float normalised, data_samples=dict(label, index, num_skipped))``.
    """

    def __init__(self, data_root: str, split: str = 'train', transform: dict | None = None,
                 classes: list[str] | None = None):
        self.data_root = str(data_root)
        self.split = split
        self.classes, self.samples = scan_split(Path(data_root) / split)
        if classes is not None and list(classes) != self.classes:
            missing = sorted(set(classes) - set(self.classes))
            extra = sorted(set(self.classes) - set(classes))
            raise ImageFolderError(f'{Path(data_root) / split}: class folders differ from the expected ones '
                                   f'(missing {len(missing)}: {missing[:5]}; extra {len(extra)}: {extra[:5]}); '
                                   f'the labels would not match. Check it with tools/check_dataset.py.')
        if not self.samples:
            raise ImageFolderError(f'{Path(data_root) / split}: no images ({", ".join(IMAGE_EXTENSIONS)}) in its '
                                   f'{len(self.classes)} class folders')
        self.transform = build_transform(transform or dict(type='eval'))

    @property
    def metainfo(self) -> dict:
        return dict(classes=tuple(self.classes), data_root=self.data_root, split=self.split,
                    num_images=len(self.samples))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        for skipped in range(len(self.samples)):
            path, label = self.samples[(index + skipped) % len(self.samples)]
            try:
                with Image.open(path) as im:
                    img = im.convert('RGB')
            except Exception as e:  # PIL: OSError, ValueError, SyntaxError, DecompressionBombError ... for bad files
                print_log(f'{path}: unreadable image skipped ({type(e).__name__}: {e}); the next image of the split '
                          f'is used instead. Replace or remove the file (tools/check_dataset.py --decode lists them '
                          f'all).', logger='current', level=logging.WARNING)
                continue
            try:
                inputs = self.transform(img)
            except Exception as e:  # a decoded image the augmentation fails on is a bug of ours or timm's: name it
                raise RuntimeError(f'{path}: the {self.split} transform failed on this image ({type(e).__name__}: '
                                   f'{e}); please report it with the file') from e
            return dict(inputs=inputs, data_samples=dict(label=label, index=index, num_skipped=skipped))
        raise ImageFolderError(f'{self.data_root}/{self.split}: none of the {len(self.samples)} images could be read')
