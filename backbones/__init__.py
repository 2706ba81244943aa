"""ViT backbone, necks, checkpoint loading and layer-wise lr decay for MMDetection and MMSegmentation.

Importing this package installs the suite's safe (allow-listed) and atomic checkpoint I/O for mmengine.
"""
from . import checkpoint_io  # noqa: F401  (side effect: safe loading + atomic saving for every mmengine run)
from .vit import VisionTransformer

__all__ = ['VisionTransformer']
