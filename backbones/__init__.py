"""ViT backbone, necks, checkpoint loading and layer-wise lr decay for MMDetection and MMSegmentation.

Importing this package installs the suite's safe (allow-listed) and atomic checkpoint I/O for mmengine, and, where
mmdet and mmseg are installed, registers the transfer classes in both toolboxes (``custom_imports=['backbones']``).
Pretraining needs neither toolbox, so it can import ``backbones.vit`` without them.
"""
from importlib.util import find_spec

from . import (
    checkpoint_io,  # noqa: F401  (side effect: safe loading + atomic saving for every mmengine run)
    run_safety,  # noqa: F401  (side effect: crash-safe checkpoint rotation, non-finite gradient guard)
)
from .vit import VisionTransformer

__all__ = ['VisionTransformer']

if find_spec('mmdet') is not None and find_spec('mmseg') is not None:
    from . import registry  # noqa: F401  (side effect: registers SdAEViT, necks, LayerDecayConstructor)
    from .layer_decay import LayerDecayConstructor
    from .necks import SimpleFeaturePyramid
    from .pretrained import load_pretrained, read_backbone_state
    from .vit_backbone import SdAEViT

    __all__ += ['SdAEViT', 'SimpleFeaturePyramid', 'LayerDecayConstructor', 'load_pretrained', 'read_backbone_state']
