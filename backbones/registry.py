"""Register the transfer pieces in MMDetection's AND MMSegmentation's registries (the same classes in both).

Imported by ``backbones/__init__.py`` when mmdet and mmseg are installed, so
``custom_imports=dict(imports=['backbones'])``
in a det or seg config is all it takes.

Names must not collide with what mmdet, mmseg or their ``projects/`` register: users load e.g. mmdet's own
``projects.ViTDet`` next to ours to compare, and a second registration of a name is a ``KeyError`` (or, with
``force=True``, silently replaces the other's class). Ours carry an ``SdAE`` prefix where a generic name could clash
(``SdAELN2d``, not ``LN2d`` which ``projects.ViTDet`` registers); tests/test_registry_names.py checks every name we
register against the installed registries and against a list of the projects' names
(tests/openmmlab_project_registry_names.json).
"""
from __future__ import annotations

from mmdet.registry import HOOKS as DET_HOOKS
from mmdet.registry import MODELS as DET_MODELS
from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS as DET_CONSTRUCTORS
from mmseg.models.necks import Feature2Pyramid
from mmseg.registry import HOOKS as SEG_HOOKS
from mmseg.registry import MODELS as SEG_MODELS
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS as SEG_CONSTRUCTORS
from timm.layers import LayerNorm2d

from .layer_decay import LayerDecayConstructor
from .necks import SimpleFeaturePyramid
from .recipe_batch import SdAERecipeBatchHook
from .vit_backbone import SdAEViT

for _models in (DET_MODELS, SEG_MODELS):
    _models.register_module(module=SdAEViT, force=True)
    _models.register_module(module=SimpleFeaturePyramid, force=True)
    # Channel LayerNorm on [B, C, H, W] maps for ViTDet's heads (norm_cfg=dict(type='SdAELN2d')); mmdet's own 'LN2d'
    # lives in projects/ViTDet, outside the installed package, and must stay importable next to ours.
    _models.register_module(name='SdAELN2d', module=LayerNorm2d, force=True)
for _constructors in (DET_CONSTRUCTORS, SEG_CONSTRUCTORS):
    _constructors.register_module(module=LayerDecayConstructor, force=True)
for _hooks in (DET_HOOKS, SEG_HOOKS):
    _hooks.register_module(module=SdAERecipeBatchHook, force=True)
# The BEiT/CAE/MAE multi-level adapter: mmseg's own implementation, made available to mmdet configs as well.
DET_MODELS.register_module(module=Feature2Pyramid, force=True)
