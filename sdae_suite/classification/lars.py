"""MAE's LARS (``util/lars.py``, itself MoCo v3's), registered in mmengine's OPTIMIZERS as ``MAELARS``.

Written by hand because neither maintained LARS does MAE's update:
- ``timm.optim.Lars`` with weight decay 0 and its default ``always_adapt=False`` applies no trust ratio at all;
- mmpretrain's ``LARS`` adapts the biases too and applies the lr inside the momentum buffer.
Here, per parameter p with gradient g: for ndim > 1, g <- g + wd p, then g <- g * q with
q = trust_coefficient * ||p|| / ||g|| (1 when either norm is 0); 1-D parameters (biases, norms) are not adapted.
Then mu <- momentum * mu + g and p <- p - lr * mu: the lr stays outside the buffer, so an lr change (warmup, cosine)
acts at once on the whole accumulated step.
"""
from __future__ import annotations

import torch
from mmengine.registry import OPTIMIZERS


@OPTIMIZERS.register_module(name='MAELARS')
class MAELARS(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g['params']:
                dp = p.grad
                if dp is None:
                    continue
                if p.ndim > 1:  # not a bias or a norm's gamma / beta
                    dp = dp.add(p, alpha=g['weight_decay'])
                    param_norm, update_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    trust = torch.where(update_norm > 0, g['trust_coefficient'] * param_norm / update_norm, one)
                    q = torch.where(param_norm > 0.0, trust, one)
                    dp = dp.mul(q)
                state = self.state[p]
                if 'mu' not in state:
                    state['mu'] = torch.zeros_like(p)
                mu = state['mu']
                mu.mul_(g['momentum']).add_(dp)
                p.add_(mu, alpha=-g['lr'])
        return loss
