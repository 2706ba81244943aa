"""Register the transfer pieces in MMDetection's AND MMSegmentation's registries (the same classes in both).

Imported by ``backbones/__init__.py`` when mmdet and mmseg are installed, so
``custom_imports=dict(imports=['backbones'])``
in a det or seg config is all it takes.
"""
from __future__ import annotations

from mmdet.registry import MODELS as DET_MODELS
from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS as DET_CONSTRUCTORS
from mmseg.models.necks import Feature2Pyramid
from mmseg.registry import MODELS as SEG_MODELS
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS as SEG_CONSTRUCTORS
from timm.layers import LayerNorm2d

from .layer_decay import LayerDecayConstructor
from .necks import SimpleFeaturePyramid
from .vit_backbone import SdAEViT

for _models in (DET_MODELS, SEG_MODELS):
    _models.register_module(module=SdAEViT, force=True)
    _models.register_module(module=SimpleFeaturePyramid, force=True)
    # Channel LayerNorm on [B, C, H, W] maps for ViTDet's heads (norm_cfg=dict(type='LN2d')); mmdet keeps its own in
    # projects/, outside the installed package.
    _models.register_module(name='LN2d', module=LayerNorm2d, force=True)
for _constructors in (DET_CONSTRUCTORS, SEG_CONSTRUCTORS):
    _constructors.register_module(module=LayerDecayConstructor, force=True)
# The BEiT/CAE/MAE multi-level adapter: mmseg's own implementation, made available to mmdet configs as well.
DET_MODELS.register_module(module=Feature2Pyramid, force=True)
