"""Register the transfer pieces in MMDetection's AND MMSegmentation's registries (the same classes in both), under
names of our own.

Imported by ``backbones/__init__.py`` (``sdae_suite.backbones``) when mmdet and mmseg are installed, so our det / seg
configs' ``custom_imports`` (``sdae_suite.backbones``, ``sdae_suite.engine``, ``sdae_suite.engine.safe_io_setup``) are
all it takes.

Names must not collide with what mmengine, mmdet, mmseg or their ``projects/`` register: users load e.g. mmdet's own
``projects.ViTDet`` next to ours to compare, and a second registration of a name is a ``KeyError``. Ours carry an
``SdAE`` prefix where a generic name could clash (``SdAELN2d``, not ``LN2d`` which ``projects.ViTDet`` registers), and
nothing is registered with ``force=True``; tests/test_registry_names.py checks every name we register against the
installed registries and against a list of the projects' names (tests/openmmlab_project_registry_names.json).
mmseg's own ``Feature2Pyramid`` (the BEiT/CAE/MAE multi-level adapter) is used in mmdet configs by its scoped name,
``type='mmseg.Feature2Pyramid'``, not registered a second time.
"""
from __future__ import annotations

from mmdet.registry import MODELS as DET_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmseg.registry import MODELS as SEG_MODELS
from timm.layers import LayerNorm2d

from .layer_decay import LayerDecayConstructor
from .necks import SimpleFeaturePyramid
from .vit_backbone import SdAEViT

for _models in (DET_MODELS, SEG_MODELS):
    _models.register_module(module=SdAEViT)
    _models.register_module(module=SimpleFeaturePyramid)
    # Channel LayerNorm on [B, C, H, W] maps for ViTDet's heads (norm_cfg=dict(type='SdAELN2d')); mmdet's own 'LN2d'
    # lives in projects/ViTDet, outside the installed package, and must stay importable next to ours.
    _models.register_module(name='SdAELN2d', module=LayerNorm2d)
# The layer-decay constructor in mmengine's root registry: mmdet's and mmseg's children find it there, and so do the
# classification configs (default_scope 'mmengine').
OPTIM_WRAPPER_CONSTRUCTORS.register_module(module=LayerDecayConstructor)
