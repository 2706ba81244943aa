"""Top-1 / top-5 accuracy (%) as MAE's ``engine_finetune.evaluate`` computes it (timm ``accuracy``), registered in
mmengine's METRICS as ``SdAETopKAccuracy``; keys ``accuracy/top1`` and ``accuracy/top5``. The per-image top-k
predictions are kept small (k indices, not the 1000 scores), so ImageNet's 50,000 validation images gather cheaply
across ranks."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS


@METRICS.register_module(name='SdAETopKAccuracy')
class SdAETopKAccuracy(BaseMetric):
    default_prefix = 'accuracy'

    def __init__(self, topk: Sequence[int] = (1, 5), collect_device: str = 'cpu', prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = tuple(topk)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            self.results.append(dict(topk=torch.as_tensor(s['topk']).cpu(), label=int(s['gt_label'])))

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        if not results:
            raise ValueError('SdAETopKAccuracy: no predictions to score (empty validation set?)')
        preds = torch.stack([r['topk'] for r in results])  # [N, K] best first
        labels = torch.tensor([r['label'] for r in results])
        hits = preds == labels[:, None]
        out = {}
        for k in self.topk:
            if k > preds.shape[1]:  # fewer classes than k: every image is a hit (timm's accuracy clips k the same)
                out[f'top{k}'] = 100.0
                continue
            out[f'top{k}'] = 100.0 * hits[:, :k].any(1).float().mean().item()
        return out
