"""ImageNet-1K classification at MAE's / official SdAE's protocols: end-to-end fine-tuning and linear probing
(``cls_configs/``). Importing registers our classes in mmengine's root registries under names of our own:
``SdAEImageClassifier`` (model), ``SdAEImageFolder`` (dataset), ``SdAETopKAccuracy`` (metric), ``MAELARS``
(optimizer). The layer-decay constructor and the warmup schedule are the ones detection / segmentation and pretraining
use (``sdae_suite.backbones.layer_decay``, ``sdae_suite.engine.schedulers``)."""
from .dataset import ImageFolderError, SdAEImageFolder, scan_split
from .lars import MAELARS
from .metric import SdAETopKAccuracy
from .model import SdAEImageClassifier
from .transforms import (
           MAERandomResizedCrop,
           build_transform,
           eval_transform,
           finetune_train_transform,
           linprobe_train_transform,
)

__all__ = ['ImageFolderError', 'MAELARS', 'MAERandomResizedCrop', 'SdAEImageClassifier', 'SdAEImageFolder',
           'SdAETopKAccuracy', 'build_transform', 'eval_transform', 'finetune_train_transform',
           'linprobe_train_transform', 'scan_split']
