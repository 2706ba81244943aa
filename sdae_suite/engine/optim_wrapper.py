"""The optimizer wrapper of every fp32 run of the suite (``optim_wrapper = dict(type='FiniteGradOptimWrapper', ...)``):
the demo configs, pretraining without AMP, and the full recipes on a CPU-only machine (tools/train.py switches them).

A step whose gradients hold NaN or inf is not applied; the run stops with :class:`NonFiniteGradientError` naming the
parameters, so the weights (and the last checkpoint) stay finite. We stop rather than skip: one non-finite gradient in
fp32 means the run has diverged or the data is broken, and a silently skipped step hides both. (AMP runs use
``AmpOptimWrapper``, the full det / seg recipes and ``amp = True`` pretraining on a GPU among them: fp16 loss scaling
produces inf gradients by design, and its GradScaler skips those steps.)
"""
from __future__ import annotations

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


class NonFiniteGradientError(FloatingPointError):
    """A gradient held NaN/inf; raised before the optimizer step, so the weights are untouched."""


def non_finite_names(named: list[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the tensors holding NaN or inf. One max-abs reduction per tensor batch (``_foreach_norm`` with
    ord=inf cannot overflow the way a 2-norm of large finite values can)."""
    named = [(n, t) for n, t in named if t.is_floating_point() and t.numel()]
    if not named:
        return []
    norms = torch._foreach_norm([t.detach() for _, t in named], float('inf'))
    finite = torch.isfinite(torch.stack([n.float() for n in norms])).tolist()
    return [n for (n, _), ok in zip(named, finite) if not ok]


def show_names(names: list[str]) -> str:
    return ', '.join(names[:5]) + (f' and {len(names) - 5} more' if len(names) > 5 else '')


@OPTIM_WRAPPERS.register_module()
class FiniteGradOptimWrapper(OptimWrapper):
    """mmengine's ``OptimWrapper`` that refuses to apply a step with non-finite gradients; chosen by our configs with
    ``optim_wrapper = dict(type='FiniteGradOptimWrapper', ...)``."""

    param_names: dict[int, str] = {}  # id(parameter) -> name in the model; CrashSafeCheckpointHook fills it in

    def step(self, **kwargs) -> None:
        grads = [(self.param_names.get(id(p), f'param_groups[{i}].params[{j}]'), p.grad)
                 for i, g in enumerate(self.optimizer.param_groups) for j, p in enumerate(g['params'])
                 if p.grad is not None]
        bad = non_finite_names(grads)
        if bad:
            raise NonFiniteGradientError(
                f'non-finite gradient in {len(bad)} parameter(s) ({show_names(bad)}): the optimizer step was not '
                f'applied, so the weights and the last checkpoint are intact. Resume from it with a lower lr, gradient '
                f'clipping (--cfg-options optim_wrapper.clip_grad.max_norm=3.0), or check the data of this iteration.')
        super().step(**kwargs)
