"""Optimizer parameter groups exactly as MAE / official SdAE build them."""
from __future__ import annotations

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from timm.optim import param_groups_weight_decay
from torch import nn


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PretrainOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Two groups via timm's ``param_groups_weight_decay`` (what MAE calls): no weight decay on 1-D parameters (biases,
    norms) and on names matching ``paramwise_cfg.no_decay_names`` (pos/cls/mask tokens); ``optimizer.weight_decay``
    on the rest. Frozen parameters -- the EMA teacher, fixed sin-cos tables -- are not given to the optimizer at all
    (mmengine's default constructor would log a warning for each of them)."""

    def __call__(self, model: nn.Module) -> OptimWrapper:
        model = getattr(model, 'module', model)
        optimizer_cfg = self.optimizer_cfg.copy()
        no_decay = self.paramwise_cfg.get('no_decay_names', ('*pos_embed', '*cls_token', '*mask_token'))
        optimizer_cfg['params'] = param_groups_weight_decay(model, optimizer_cfg.pop('weight_decay', 0.0),
                                                            no_weight_decay_list=no_decay)
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        wrapper_cfg = self.optim_wrapper_cfg.copy()
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))
