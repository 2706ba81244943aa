"""The image transforms of MAE's / official SdAE's ImageNet fine-tuning and linear probing, built from timm and
torchvision exactly as ``main_finetune.py`` / ``main_linprobe.py`` build them.

Every argument of timm's ``create_transform`` is written out: timm's own defaults (bilinear, ``re_mode='const'``,
colour jitter 0.4) are not the recipe's. MAE's linear probing uses its own ``util/crop.RandomResizedCrop``
(:class:`MAERandomResizedCrop`): one draw of area and aspect ratio, clipped to the image, instead of torchvision's
ten tries with a centre-crop fallback -- the crops (and so the accuracy) differ, so it is reproduced here.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from PIL import Image, ImageOps
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data.auto_augment import RandAugment
from torchvision import transforms as T
from torchvision.transforms import functional as TF

# MAE's eval resize: int(input_size / crop_pct) with crop_pct = 224 / 256 (256 for 224 px)
EVAL_CROP_PCT = 224 / 256


class MAERandomResizedCrop(T.RandomResizedCrop):
    """MAE ``util/crop.RandomResizedCrop``: a single draw (no retry loop, no centre-crop fallback)."""

    @staticmethod
    def get_params(img: Any, scale: list[float], ratio: list[float]) -> tuple[int, int, int, int]:
        _, height, width = TF.get_dimensions(img)
        area = height * width
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        log_ratio = torch.log(torch.tensor(ratio))
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = min(int(round(math.sqrt(target_area * aspect_ratio))), width)
        h = min(int(round(math.sqrt(target_area / aspect_ratio))), height)
        i = torch.randint(0, height - h + 1, size=(1,)).item()
        j = torch.randint(0, width - w + 1, size=(1,)).item()
        return i, j, h, w


POSTERIZE_OPS = ('Posterize', 'PosterizeIncreasing', 'PosterizeOriginal')


def posterize_zero_bits_safe(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's ``posterize``, where 0 bits gives the black image it gave up to Pillow 12 (Pillow 13 raises ValueError
    for bits < 1). RandAugment ``inc1`` at m9 / mstd 0.5 asks for 0 bits in ~0.1 % of the transforms it draws: on
    ImageNet that is an exception in a loader worker within minutes, ending the run."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _safe_posterize(transform: T.Compose) -> T.Compose:
    """Point this transform's RandAugment posterize ops at :func:`posterize_zero_bits_safe` (timm's table is left
    alone: the change stays inside the transforms we build)."""
    for t in transform.transforms:
        if isinstance(t, RandAugment):
            for op in t.ops:
                if op.name in POSTERIZE_OPS:
                    op.aug_fn = posterize_zero_bits_safe
    return transform


def finetune_train_transform(input_size: int = 224, auto_augment: str | None = 'rand-m9-mstd0.5-inc1',
                             re_prob: float = 0.25, re_mode: str = 'pixel', re_count: int = 1,
                             color_jitter: float | None = None) -> T.Compose:
    """``main_finetune.build_transform(is_train=True)``: timm RandomResizedCrop (bicubic) -> hflip -> RandAugment ->
    ToTensor -> Normalize -> RandomErasing. Arguments as ``main_finetune.py``'s (SdAE's README values by default).
    Posterize to 0 bits gives a black image, as with the Pillow the official code ran on."""
    return _safe_posterize(create_transform(input_size=input_size, is_training=True, no_aug=False, train_crop_mode=None,
                            scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5, vflip=0.0, color_jitter=color_jitter,
                            color_jitter_prob=None, grayscale_prob=0.0, gaussian_blur_prob=0.0,
                            auto_augment=auto_augment, interpolation='bicubic', mean=IMAGENET_DEFAULT_MEAN,
                            std=IMAGENET_DEFAULT_STD, re_prob=re_prob, re_mode=re_mode, re_count=re_count,
                            re_num_splits=0, crop_pct=None, crop_mode=None, crop_border_pixels=None,
                            tf_preprocessing=False,
                            use_prefetcher=False, normalize=True, separate=False))


def linprobe_train_transform(input_size: int = 224) -> T.Compose:
    """``main_linprobe.py``: MAE's RandomResizedCrop (bicubic) -> hflip -> ToTensor -> Normalize; nothing else."""
    return T.Compose([MAERandomResizedCrop(input_size, interpolation=T.InterpolationMode.BICUBIC),
                      T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)])


def eval_transform(input_size: int = 224, crop_pct: float = EVAL_CROP_PCT) -> T.Compose:
    """``main_finetune.build_transform(is_train=False)`` (also linear probing's): Resize(int(size / crop_pct), bicubic)
    -> CenterCrop(size) -> ToTensor -> Normalize. 256 -> 224 for ViT-B."""
    return T.Compose([T.Resize(int(input_size / crop_pct), interpolation=T.InterpolationMode.BICUBIC),
                      T.CenterCrop(input_size), T.ToTensor(),
                      T.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)])


TRANSFORMS = {'finetune': finetune_train_transform, 'linprobe': linprobe_train_transform, 'eval': eval_transform}


def build_transform(cfg: dict) -> T.Compose:
    """``dict(type='finetune' | 'linprobe' | 'eval', **arguments)`` -> the transform."""
    cfg = dict(cfg)
    kind = cfg.pop('type', None)
    if kind not in TRANSFORMS:
        raise ValueError(f'transform type {kind!r}: expected one of {sorted(TRANSFORMS)} (sdae_suite/classification/'
                         f'transforms.py)')
    return TRANSFORMS[kind](**cfg)
