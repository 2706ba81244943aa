"""Pretraining images from any folder: ImageNet-style (root/<class>/<img>) or flat (root/<img>), searched recursively.

Labels are not read. Augmentation is MAE's: RandomResizedCrop(scale 0.2-1.0, bicubic) + horizontal flip (torchvision).
Samples are uint8 [3, H, W]; mean/std normalisation runs batched on the device (mmengine ``ImgDataPreprocessor``).
"""
from __future__ import annotations

import os
from pathlib import Path

from mmengine.registry import DATASETS
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from sdae_suite.contracts import IMAGE_EXTENSIONS


class CorruptImageError(RuntimeError):
    """An image file could not be decoded; the message names the file and the fix."""


def list_images(root: str | os.PathLike) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'pretraining data folder not found: {root} (set train_dataloader.dataset.data_root; '
                                f'relative paths are from {Path.cwd()})')
    files = sorted(str(Path(d) / f) for d, _, names in os.walk(root, followlinks=True) for f in names
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise FileNotFoundError(f'{root}: no images ({", ".join(IMAGE_EXTENSIONS)}) found; expected an ImageNet-style '
                                f'folder (root/<class>/<image>) or a flat folder of images')
    return files


@DATASETS.register_module()
class ImageFolderPretrainDataset(Dataset):
    """Args:
        data_root: folder searched recursively for images.
        img_size: output crop size.
        scale: RandomResizedCrop area range.
        skip_corrupt: False -> an unreadable file stops the run with an error naming it; True -> it is skipped (the next
            file is used instead) and counted (``num_skipped`` in each sample, summed and logged by
            :class:`sdae_suite.engine.hooks.SkippedImagesHook`).
    """

    def __init__(self, data_root: str, img_size: int = 224, scale: tuple[float, float] = (0.2, 1.0),
                 skip_corrupt: bool = False):
        self.data_root = str(data_root)
        self.files = list_images(data_root)
        self.skip_corrupt = skip_corrupt
        self.transform = T.Compose([
            T.RandomResizedCrop(img_size, scale=tuple(scale), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.PILToTensor(),
        ])

    @property
    def metainfo(self) -> dict:
        return dict(data_root=self.data_root, num_images=len(self.files))

    def __len__(self) -> int:
        return len(self.files)

    def load(self, path: str) -> Image.Image:
        try:
            with Image.open(path) as im:
                return im.convert('RGB')
        except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError ... for bad files
            raise CorruptImageError(
                f'{path}: cannot read this image ({type(e).__name__}: {e}). Remove or replace the file, or set '
                f'train_dataloader.dataset.skip_corrupt=True to skip unreadable images (they are counted in the log).'
            ) from None

    def __getitem__(self, index: int) -> dict:
        for skipped in range(len(self.files)):
            path = self.files[(index + skipped) % len(self.files)]
            try:
                img = self.load(path)
            except CorruptImageError:
                if not self.skip_corrupt:
                    raise
                continue
            return dict(inputs=self.transform(img), data_samples=dict(num_skipped=skipped))
        raise CorruptImageError(f'{self.data_root}: none of the {len(self.files)} images could be read')
