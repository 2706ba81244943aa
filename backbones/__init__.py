"""ViT backbone, necks, the checkpoint-format reader and layer-wise lr decay for MMDetection and MMSegmentation.

Importing registers the transfer classes in both toolboxes where mmdet and mmseg are installed (our own names only;
see ``registry.py``). Pretraining needs neither toolbox, so it can import ``sdae_suite.backbones.vit`` without them.
"""
from importlib.util import find_spec

from .vit import VisionTransformer

__all__ = ['VisionTransformer']

if find_spec('mmdet') is not None and find_spec('mmseg') is not None:
    from . import registry  # noqa: F401  (registers SdAEViT, necks, LayerDecayConstructor under our names)
    from .layer_decay import LayerDecayConstructor
    from .necks import SimpleFeaturePyramid
    from .pretrained import load_pretrained, read_backbone_state
    from .vit_backbone import SdAEViT

    __all__ += ['SdAEViT', 'SimpleFeaturePyramid', 'LayerDecayConstructor', 'load_pretrained', 'read_backbone_state']
