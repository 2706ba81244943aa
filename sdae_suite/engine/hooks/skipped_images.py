"""Unreadable images skipped by a dataset (pretraining pool, ImageNet classification): counted over all ranks, logged,
and kept in the checkpoint."""
from __future__ import annotations

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SkippedImagesHook(Hook):
    """Counts unreadable images skipped by the dataset (``skip_corrupt=True``) over all ranks and logs the running
    total; the total is kept in the checkpoint so that a resumed run goes on counting."""

    def __init__(self):
        self.total = 0

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        samples = (data_batch or {}).get('data_samples') if isinstance(data_batch, dict) else None
        if isinstance(samples, dict) and 'num_skipped' in samples:
            n = torch.as_tensor(samples['num_skipped']).sum().reshape(1).to(torch.int64)
            all_reduce(n)  # every rank reads different files; a no-op without a process group
            n = int(n.item())
            if n:
                self.total += n
                runner.logger.warning(f'skipped {n} unreadable image(s) in this batch ({self.total} so far)')
                runner.message_hub.update_scalar('train/skipped_images', self.total)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['meta']['skipped_images'] = self.total

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self.total = int(checkpoint.get('meta', {}).get('skipped_images', 0))

