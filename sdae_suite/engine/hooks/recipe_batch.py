"""Keep a recipe's effective (total) batch whatever the number of GPUs.

A recipe's learning rate, warmup and milestones belong to one total batch: ViTDet's 100-epoch schedule is 184,375
iterations of 64 images. Run on 8 GPUs with the per-GPU batch meant for 16, it trains at batch 32: half the epochs at
the recipe's lr and milestones. mmengine's ``auto_scale_lr`` would rescale the lr linearly but not the iteration count
(and is off unless asked for), so the silent default is wrong either way.

``SdAERecipeBatchHook(batch_size=N)`` (in ``custom_hooks`` of every full recipe config) checks, at ``before_run``
(before the pretrained weights are loaded and any training step), that ``world size x train_dataloader.batch_size x
optim_wrapper.accumulative_counts == N`` (gradient accumulation is an allowed way to reach it, as MAE's linear probing
does with ``--accum_iter 4``):

- equal: logged as the recipe's batch;
- different and ``auto_scale_lr.enable`` false (the default): an error naming the fix (the per-GPU batch that gives N
  on this many processes);
- different and ``auto_scale_lr=dict(enable=True, base_batch_size=N)``: mmengine scales the lr by actual / N; the run is
  allowed and logged as a deviation from the recipe (the schedule is not rescaled).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS


class RecipeBatchError(RuntimeError):
    """The run's total batch is not the recipe's and nothing compensates for it."""


def check_effective_batch(cfg: Mapping[str, Any], world_size: int, recipe_batch: int) -> str:
    """Return a one-line statement of the run's batch against ``recipe_batch``, or raise :class:`RecipeBatchError`.

    ``cfg``: the run's config (``train_dataloader.batch_size`` per process, ``auto_scale_lr``); ``world_size``: the
    number of training processes (GPUs).
    """
    per_gpu = int(cfg['train_dataloader']['batch_size'])
    accum = int((cfg.get('optim_wrapper') or {}).get('accumulative_counts', 1))
    total = world_size * per_gpu * accum
    steps = f' x {accum} accumulated batches' if accum > 1 else ''
    if total == recipe_batch:
        return f'total batch {total} = {world_size} processes x {per_gpu}{steps}: the recipe batch'
    scale = dict(cfg.get('auto_scale_lr') or {})
    fix_gpu = recipe_batch // (world_size * accum) if recipe_batch % (world_size * accum) == 0 else None
    fix = (f'--cfg-options train_dataloader.batch_size={fix_gpu} ({recipe_batch} / {world_size} processes'
           f'{f" / {accum} accumulated" if accum > 1 else ""})' if fix_gpu else
           f'a number of GPUs that divides {recipe_batch}, with batch_size x optim_wrapper.accumulative_counts = '
           f'{recipe_batch} / GPUs')
    if fix_gpu and accum == 1 and recipe_batch % world_size == 0 and recipe_batch // world_size > 512:
        fix += (f', or gradient accumulation when that does not fit in memory (e.g. train_dataloader.batch_size='
                f'{recipe_batch // world_size // 4} optim_wrapper.accumulative_counts=4)')
    if not scale.get('enable', False):
        raise RecipeBatchError(
            f'this recipe trains at a total batch of {recipe_batch}; this run would train at {total} '
            f'({world_size} processes x {per_gpu} per process{steps}), with the lr, warmup and milestones of batch '
            f'{recipe_batch}. Fix: {fix}. To run at batch {total} anyway with the lr scaled linearly (a deviation '
            f'from the recipe: same iterations, {total / recipe_batch:g}x the images), pass --cfg-options '
            f'auto_scale_lr.enable=True auto_scale_lr.base_batch_size={recipe_batch}.')
    base = scale.get('base_batch_size')
    if base != recipe_batch:
        raise RecipeBatchError(f'auto_scale_lr.base_batch_size is {base}, but this recipe\'s lr belongs to batch '
                               f'{recipe_batch}: set auto_scale_lr.base_batch_size={recipe_batch} (or fix the batch: '
                               f'{fix})')
    return (f'DEVIATION from the recipe: total batch {total} ({world_size} processes x {per_gpu}{steps}) instead of '
            f'{recipe_batch}; mmengine auto_scale_lr scales the lr by {total / recipe_batch:g}, the schedule '
            f'(iterations / epochs, warmup, milestones) is unchanged')


@HOOKS.register_module()
class SdAERecipeBatchHook(Hook):
    """Fail (or log the deviation) before training when the total batch is not the recipe's; see the module doc."""

    priority = 'VERY_HIGH'

    def __init__(self, batch_size: int):
        self.batch_size = int(batch_size)

    def before_run(self, runner) -> None:
        message = check_effective_batch(runner.cfg, runner.world_size, self.batch_size)
        print_log(f'[recipe batch] {message}', logger='current')
