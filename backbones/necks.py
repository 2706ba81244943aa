"""Necks that turn the ViT's single-stride (1/p) maps into a pyramid, for MMDetection and MMSegmentation.

- Multi-level adapter (BEiT / CAE / mmseg MAE): maps of blocks [3, 5, 7, 11] rescaled by 4, 2, 1, 0.5
  (deconv-BN-GELU-deconv / deconv / identity / maxpool). That is exactly mmseg's ``Feature2Pyramid``; we reuse it
  instead of writing a copy: mmdet configs name it ``type='mmseg.Feature2Pyramid'`` (mmengine's scoped lookup).
- ViTDet simple feature pyramid (below): from the LAST map only; no library ships it (mmdet keeps ViTDet under
  ``projects/``, outside the installed package), so it is written here.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import LayerNorm2d
from torch import nn


def _conv_ln(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), LayerNorm2d(cout))


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid: [B, D, H, W] (stride s) -> P2..P6 maps with ``out_channels`` channels.

    Scale 4: deconv(D -> D/2) - LN - GELU - deconv(D/2 -> D/4); scale 2: deconv(D -> D/2); 1: identity;
    0.5 / 0.25: maxpool 2 / 4 (0.25 serves patch-8 backbones: strides 4-32 from a stride-8 map).
    Each level then 1x1 conv + LN, 3x3 conv + LN; P6 = maxpool(k=1, s=2) of the last level.

    Args:
        in_channels: D, the backbone width.
        scale_factors: rescales of the input map, in increasing-stride order.
        use_p6: append the P6 level (max-pooled from the smallest map), as ViTDet's Mask R-CNN does.
    """

    def __init__(self, in_channels: int, out_channels: int = 256, scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 use_p6: bool = True):
        super().__init__()
        d = in_channels
        self.stages = nn.ModuleList()
        for s in scale_factors:
            if s == 4.0:
                layers, c = [nn.ConvTranspose2d(d, d // 2, 2, 2), LayerNorm2d(d // 2), nn.GELU(),
                             nn.ConvTranspose2d(d // 2, d // 4, 2, 2)], d // 4
            elif s == 2.0:
                layers, c = [nn.ConvTranspose2d(d, d // 2, 2, 2)], d // 2
            elif s == 1.0:
                layers, c = [], d
            elif s in (0.5, 0.25):
                layers, c = [nn.MaxPool2d(int(1 / s), int(1 / s))], d
            else:
                raise ValueError(f'scale factor {s} not supported (use 4, 2, 1, 0.5, 0.25)')
            self.stages.append(nn.Sequential(*layers, _conv_ln(c, out_channels, 1), _conv_ln(out_channels,
                                                                                               out_channels, 3)))
        self.use_p6 = use_p6

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """inputs: backbone maps (only the last, [B, D, H, W], is used) -> tuple of [B, C, H*s, W*s] (+ P6)."""
        x = inputs[-1]
        outs = [stage(x) for stage in self.stages]
        if self.use_p6:
            outs.append(nn.functional.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)
