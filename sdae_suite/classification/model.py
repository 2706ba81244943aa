"""The suite's ViT with a classification head, for ImageNet fine-tuning and linear probing at MAE's / official SdAE's
protocols (``models_vit.py``, ``main_finetune.py``, ``main_linprobe.py``); registered in mmengine's MODELS as
``SdAEImageClassifier``.

The encoder is :class:`sdae_suite.backbones.vit_backbone.SdAEViT` -- the same class detection and segmentation
fine-tune, with the same strict loader for every checkpoint layout. ``protocol`` picks the head:

- ``'finetune'`` (``models_vit.VisionTransformer(global_pool=True)``): mean of the patch tokens -> ``fc_norm``
  (LayerNorm, eps 1e-6; the encoder's final ``norm`` is not built, so a checkpoint's ``norm.*`` is dropped and
  reported) -> ``head`` Linear, weight trunc_normal(std 2e-5), bias 0. Every parameter trains; the loss is timm's
  ``SoftTargetCrossEntropy`` after timm's ``Mixup`` (which also smooths the labels), else label-smoothed or plain
  cross-entropy, as ``main_finetune.py`` chooses.
- ``'linear'`` (``main_linprobe.py``): the cls token after the encoder's final norm -> ``head`` =
  BatchNorm1d(D, affine=False, eps 1e-6) -> Linear, weight trunc_normal(std 0.01), bias 0. Only the head trains (D x C
  + C parameters: 769,000 for ViT-B at 1000 classes); the encoder is frozen and stays in eval mode. Plain
  cross-entropy.

``head`` and ``fc_norm`` are new by design; the loader lists them as such, and any other backbone key missing from the
checkpoint is an error (the loader's rule).

Shapes: inputs [N, 3, S, S] normalised floats (the dataset's transforms normalise, as the official code does).
"""
from __future__ import annotations

from typing import Any

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from timm.data import Mixup
from timm.layers import trunc_normal_
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from sdae_suite.backbones.vit_backbone import SdAEViT

PROTOCOLS = ('finetune', 'linear')
HEAD_INIT_STD = {'finetune': 2e-5, 'linear': 0.01}  # main_finetune.py / main_linprobe.py
NEW_BY_DESIGN = {'finetune': ('fc_norm', 'head'), 'linear': ('head',)}


@MODELS.register_module(name='SdAEImageClassifier')
class SdAEImageClassifier(BaseModel):
    """Args:
        backbone: :class:`SdAEViT` arguments (arch, ``drop_path_rate``, ``img_size``, ``init_cfg`` with the pretrained
            checkpoint and branch); ``final_norm`` and ``out_indices`` are set from the protocol.
        num_classes: output classes.
        protocol: 'finetune' or 'linear' (see the module doc).
        mixup: ``timm.data.Mixup`` arguments (fine-tuning), or None.
        label_smoothing: without mixup, label-smoothed cross-entropy (``main_finetune.py --smoothing``).
    """

    def __init__(self, backbone: dict, num_classes: int, protocol: str = 'finetune', mixup: dict | None = None,
                 label_smoothing: float = 0.0, data_preprocessor: dict | None = None, init_cfg: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor or dict(type='BaseDataPreprocessor'), init_cfg=init_cfg)
        if protocol not in PROTOCOLS:
            raise ValueError(f'protocol must be one of {PROTOCOLS}, got {protocol!r}')
        if protocol == 'linear' and mixup:
            raise ValueError('linear probing trains with plain cross-entropy (main_linprobe.py): remove mixup')
        self.protocol = protocol
        self.num_classes = int(num_classes)
        backbone = dict(backbone)
        backbone.pop('type', None)
        depth = backbone.get('depth', 12)
        self.backbone = SdAEViT(**{**backbone, 'final_norm': 'none' if protocol == 'finetune' else 'last',
                                   'out_indices': [depth - 1]})
        dim = self.backbone.embed_dim
        if protocol == 'finetune':
            self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
            self.head = nn.Linear(dim, self.num_classes)
            linear = self.head
        else:
            self.head = nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, self.num_classes))
            linear = self.head[1]
            for p in self.backbone.parameters():
                p.requires_grad = False
        trunc_normal_(linear.weight, std=HEAD_INIT_STD[protocol])
        nn.init.zeros_(linear.bias)
        self.mixup = Mixup(**mixup) if mixup else None
        if self.mixup is not None:
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        elif label_smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(smoothing=label_smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()

    def init_weights(self) -> None:
        """Load the pretrained encoder (``backbone.init_cfg``; random init without one); the head keeps its init."""
        self.backbone.init_weights()
        new = ', '.join(f'{m}.*' for m in NEW_BY_DESIGN[self.protocol])
        n_new = sum(p.numel() for n, p in self.named_parameters() if n.startswith(NEW_BY_DESIGN[self.protocol]))
        print_log(f'SdAEImageClassifier ({self.protocol}): new by design, initialised here: {new} '
                  f'({n_new:,}'
                  f' parameters); trainable: {sum(p.numel() for p in self.parameters() if p.requires_grad):,}',
                  logger='current')

    def train(self, mode: bool = True) -> SdAEImageClassifier:
        super().train(mode)
        if self.protocol == 'linear':
            self.backbone.eval()  # frozen encoder: inference behaviour (no drop path) whatever the loop asks
        return self

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs: [N, 3, S, S] -> [N, D]: mean patch token -> fc_norm (finetune), normed cls token (linear)."""
        bb = self.backbone
        tokens, grid = bb.embed(inputs)
        x, _ = bb.run_blocks(bb.prepend_cls(tokens), grid)
        if self.protocol == 'finetune':
            return self.fc_norm(x[:, bb.num_prefix:].mean(dim=1))
        return bb.norm(x)[:, 0]

    def forward(self, inputs: torch.Tensor, data_samples: dict | None = None, mode: str = 'tensor') -> Any:
        """mode 'loss' -> {'loss'}; 'predict' -> [{'topk', 'gt_label', 'index'}] per image; 'tensor' -> logits."""
        if mode == 'loss':
            labels = data_samples['label'].to(inputs.device)
            if self.mixup is not None:
                inputs, targets = self.mixup(inputs, labels)
            else:
                targets = labels
            logits = self.head(self.features(inputs))
            return dict(loss=self.criterion(logits, targets))
        logits = self.head(self.features(inputs))
        if mode == 'tensor':
            return logits
        if mode != 'predict':
            raise ValueError(f'unknown mode {mode!r}')
        topk = logits.float().topk(min(5, self.num_classes), dim=1).indices.cpu()
        labels = data_samples['label'].cpu().tolist()
        index = data_samples['index'].cpu().tolist() if 'index' in data_samples else [None] * len(labels)
        return [dict(topk=t, gt_label=y, index=i) for t, y, i in zip(topk, labels, index)]
