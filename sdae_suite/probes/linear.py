"""Linear classification on frozen pooled features: BatchNorm without affine + Linear (MAE's linear-probe head),
trained with AdamW on the cached features (full batch per step: the demo set is small; mini-batches for large sets)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def linear_probe(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
                 num_classes: int, seed: int = 0, epochs: int = 100, lr: float = 0.1, weight_decay: float = 1e-4,
                 batch_size: int = 4096) -> dict[str, float]:
    """train: [N, D], test: [M, D] -> {'top1': test accuracy %, 'train_top1': training accuracy %}.

    Deterministic for a seed (head init and batch order come from a private generator; the global RNG is left alone).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # momentum=None: cumulative mean of the batch statistics, so eval uses the training set's own statistics even
        # after few steps (the default 0.1 running average lags and costs held-out accuracy on short schedules).
        head = nn.Sequential(nn.BatchNorm1d(train.shape[1], affine=False, momentum=None),
                             nn.Linear(train.shape[1], num_classes))
    nn.init.normal_(head[1].weight, std=0.01, generator=g)
    nn.init.zeros_(head[1].bias)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    x, y = train.float(), train_labels.long()
    with torch.enable_grad():
        for _ in range(epochs):
            head.train()
            for idx in torch.randperm(len(x), generator=g).split(batch_size):
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                loss = F.cross_entropy(head(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
    head.eval()
    with torch.no_grad():
        acc = lambda f, lab: 100.0 * (head(f.float()).argmax(1) == lab).double().mean().item()  # noqa: E731
        return {'top1': acc(test, test_labels), 'train_top1': acc(train, train_labels)}
