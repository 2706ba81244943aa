"""Linear semantic segmentation on frozen patch features (the linear protocol of iBOT / DINOv2): BatchNorm + 1x1 conv
on the last block's patch tokens, logits upsampled bilinearly to the label map, cross-entropy with the ignore index;
scored with mmseg's ``IoUMetric`` (the metric the UperNet fine-tunes report), not a hand-written IoU."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmseg.evaluation import IoUMetric
from torch import nn

from .data import IGNORE_INDEX


def seg_metrics(preds: list[torch.Tensor], gts: list[torch.Tensor], num_classes: int,
                class_names: list[str] | None = None) -> dict[str, float]:
    """preds, gts: int [H_i, W_i] per image (gt 255 = ignored) -> mmseg IoUMetric's {'mIoU', 'mAcc', 'aAcc'} (percent,
    rounded to 2 decimals by mmseg; classes absent from both prediction and ground truth are left out of the means)."""
    metric = IoUMetric(iou_metrics=['mIoU'], ignore_index=IGNORE_INDEX)
    metric.dataset_meta = dict(classes=list(class_names or [str(i) for i in range(num_classes)]))
    metric.process({}, [dict(pred_sem_seg=dict(data=p[None]), gt_sem_seg=dict(data=g[None]))
                        for p, g in zip(preds, gts)])
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # IoUMetric prints a per-class table at INFO: keep the probe's output short
    try:
        res = metric.compute_metrics(metric.results)
    finally:
        logger.setLevel(level)
    return {k: float(res[k]) for k in ('mIoU', 'mAcc', 'aAcc')}


class LinearSegHead(nn.Module):
    """BatchNorm2d + 1x1 conv: x [N, D, h, w] -> logits [N, C, h, w]."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(dim, momentum=None)  # cumulative statistics, see probes.linear
        self.conv = nn.Conv2d(dim, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x))


def linear_seg_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, val_feats: torch.Tensor,
                     val_labels: list[torch.Tensor], num_classes: int, seed: int = 0, epochs: int = 40,
                     lr: float = 1e-2, weight_decay: float = 1e-4, batch_size: int = 32,
                     train_label_size: int | None = None, class_names: list[str] | None = None) -> dict:
    """train_feats: [N, D, h, w], train_labels: [N, S, S] (255 ignored), val_feats: [M, D, h, w], val_labels: M maps
    [H_i, W_i] at the original size -> {'mIoU', 'mAcc', 'aAcc', 'preds': M predicted maps [H_i, W_i]}.

    Training upsamples the logits to ``train_label_size`` (default 4x the token grid; the labels are resized to it,
    nearest) rather than to the full label map: on CPU the bilinear upsampling's backward is most of the probe's
    time, and 4x finer than the tokens is already below what a linear head on patch tokens can resolve. Scoring
    always upsamples to each image's original label map.
    Deterministic for a seed (private generator for the head init and the batch order)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = LinearSegHead(train_feats.shape[1], num_classes)
    nn.init.normal_(head.conv.weight, std=0.01, generator=g)
    nn.init.zeros_(head.conv.bias)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * max(1, -(-len(train_feats) // batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    size = (train_label_size or 4 * train_feats.shape[-2], train_label_size or 4 * train_feats.shape[-1])
    size = (min(size[0], train_labels.shape[-2]), min(size[1], train_labels.shape[-1]))
    if size != tuple(train_labels.shape[-2:]):
        train_labels = F.interpolate(train_labels[:, None].float(), size=size, mode='nearest')[:, 0].long()
    with torch.enable_grad():
        head.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(train_feats), generator=g).split(batch_size):
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                logits = F.interpolate(head(train_feats[idx].float()), size=size, mode='bilinear', align_corners=False)
                loss = F.cross_entropy(logits, train_labels[idx], ignore_index=IGNORE_INDEX)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    head.eval()
    preds = []
    with torch.no_grad():
        for f, lab in zip(val_feats, val_labels):
            logits = F.interpolate(head(f[None].float()), size=tuple(lab.shape), mode='bilinear', align_corners=False)
            preds.append(logits[0].argmax(0))
    return {**seg_metrics(preds, val_labels, num_classes, class_names), 'preds': preds}
