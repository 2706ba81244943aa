"""Optimizer parameter groups and the warmup of MAE / official SdAE."""
from __future__ import annotations

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
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
