"""Optimizer parameter groups and the warmup of MAE / official SdAE."""
from __future__ import annotations

from mmengine.optim import DefaultOptimWrapperConstructor, LinearLR, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS, PARAM_SCHEDULERS
from timm.optim import param_groups_weight_decay
from torch import nn


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PretrainOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Two groups via timm's ``param_groups_weight_decay``: no weight decay on 1-D parameters and biases (norms,
    biases), ``optimizer.weight_decay`` on the rest -- ``cls_token`` and ``mask_token`` included. That is exactly what
    the official SdAE and MAE code build (timm 0.3.2 ``add_weight_decay(model, wd)`` with its empty skip list).
    ``paramwise_cfg.no_decay_names`` (timm's ``no_weight_decay_list``) adds exemptions by name for configs that want
    them. Frozen parameters -- the EMA teacher, fixed sin-cos tables -- are not given to the optimizer at all (timm
    skips them, as the official code does; mmengine's default constructor would log a warning for each of them)."""

    def __call__(self, model: nn.Module) -> OptimWrapper:
        model = getattr(model, 'module', model)
        optimizer_cfg = self.optimizer_cfg.copy()
        no_decay = tuple(self.paramwise_cfg.get('no_decay_names', ()))
        optimizer_cfg['params'] = param_groups_weight_decay(model, optimizer_cfg.pop('weight_decay', 0.0),
                                                            no_weight_decay_list=no_decay)
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        wrapper_cfg = self.optim_wrapper_cfg.copy()
        wrapper_cfg.setdefault('type', 'FiniteGradOptimWrapper')  # the suite's default: no step on a non-finite grad
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))


@PARAM_SCHEDULERS.register_module()
class LinearWarmupFromZeroLR(LinearLR):
    """Linear warmup from exactly 0: lr = base_lr * (step - begin) / (end - begin) for begin <= step <= end, i.e. 0 at
    ``begin`` and the peak at ``end`` -- MAE's / official SdAE's ``util/lr_sched.adjust_learning_rate`` stepped per
    iteration (``convert_to_iter_based=True``).

    Why not mmengine's LinearLR: it is chained (each step multiplies the previous value), so ``start_factor=0`` divides
    by zero at the second step, and it reaches ``end_factor`` at ``end - 1``, one step early. Here the value is closed
    form, and the scheduler also writes the peak at step ``end``, where a chained scheduler that begins there (the
    cosine) reads it as its starting value -- as in the official code, where lr(warmup end) is the cosine's lr_max.
    """

    def __init__(self, optimizer, begin: int = 0, end: int = 1, last_step: int = -1, by_epoch: bool = True,
                 verbose: bool = False):
        self.warmup_steps = end - begin  # set before super().__init__, whose first step() calls _get_value
        super().__init__(optimizer, start_factor=0.0, end_factor=1.0, begin=begin, end=end, last_step=last_step,
                         by_epoch=by_epoch, verbose=verbose)
        self.end = end + 1  # active at step `end` too: writes the peak that the next (chained) scheduler starts from

    def _get_value(self) -> list[float]:
        factor = min(self.last_step, self.warmup_steps) / self.warmup_steps
        return [base * factor for base in self.base_values]
