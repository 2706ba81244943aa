"""Weighted k-NN classification on frozen features, DINO's evaluation protocol (``eval_knn.py``: cosine similarity,
the k nearest training features vote for their class with weight exp(similarity / T); k = 20, T = 0.07).

Written here because no installed library has this exact voting rule (scikit-learn's KNeighborsClassifier weights by
1 / distance, not exp(cos / T)); it is a dozen lines of torch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_votes(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, num_classes: int, k: int = 20,
              temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """train: [N, D], train_labels: [N] int, test: [M, D] -> class votes [M, C]: for each test feature, the sum over
    its k most cosine-similar training features of exp(cos / T), per class of those neighbours."""
    if len(train) == 0:
        raise ValueError('k-NN needs at least one training feature')
    k = min(k, len(train))
    train = F.normalize(train.float(), dim=1)
    out = []
    for i in range(0, len(test), chunk):
        sim = F.normalize(test[i:i + chunk].float(), dim=1) @ train.T  # [m, N] cosine similarities
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(sim), num_classes, dtype=torch.float64)
        votes.scatter_add_(1, train_labels[idx].long(), (top.double() / temperature).exp())
        out.append(votes)
    return torch.cat(out) if out else torch.zeros(0, num_classes, dtype=torch.float64)


def knn_predict(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, num_classes: int, k: int = 20,
                temperature: float = 0.07) -> torch.Tensor:
    """-> predicted class per test feature [M] (ties: the lowest class index, as ``argmax``)."""
    return knn_votes(train, train_labels, test, num_classes, k, temperature).argmax(dim=1)


def knn_top1(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
             num_classes: int, k: int = 20, temperature: float = 0.07) -> float:
    """Top-1 accuracy in percent."""
    pred = knn_predict(train, train_labels, test, num_classes, k, temperature)
    return 100.0 * (pred == test_labels).double().mean().item()
