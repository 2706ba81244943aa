"""Collapse monitors of the SdAE targets, logged beside ``target_std`` (none is optimised).

``target_std`` falls to 0 only on a full collapse; these two see a partial one (measured 2026-12-03, docs/demo.md: with
per-iteration EMA on the demo data the targets' effective rank fell from 98 to 65 while ``target_std`` dropped 12 %).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_ROWS = 2048  # cost bound: at ViT-B (96 x 147 targets per GPU) every 7th token is used


@torch.no_grad()
def effective_rank(x: torch.Tensor, max_rows: int = MAX_ROWS) -> torch.Tensor:
    """x: [N, D] -> exp(entropy of the singular values normalised to sum 1) (Roy & Vetterli 2007), in [1, min(N, D)].

    Rank-1 targets give 1, D orthogonal directions of equal energy give D. Not centred: the targets' shared direction
    is part of what the monitor must see. More than ``max_rows`` rows are subsampled with a fixed stride (no RNG, so
    logging it does not change the training's random stream).

    The singular values come from the eigenvalues of the float64 Gram matrix (sqrt(eig(x^T x)) = svd(x)), outside any
    autocast: on an H200 at ViT-B batch 128 (2026-12-04) ``torch.linalg.svdvals`` took 37.6 ms of a 99 ms SdAE step,
    this 7.7 ms (step 70 ms), and its value agrees with a float64 SVD to 1e-8 where the float32 SVD was 5e-4 off.
    """
    x = x.detach()
    if x.shape[0] > max_rows:
        x = x[:: -(-x.shape[0] // max_rows)]
    with torch.autocast(x.device.type, enabled=False):
        x = x.double()
        gram = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T  # the smaller of [D, D] and [N, N]
        s = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
    p = s / s.sum().clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum()
    return entropy.exp().float()


@torch.no_grad()
def mean_cosine_to_mean(x: torch.Tensor) -> torch.Tensor:
    """x: [N, D] -> mean over rows of cos(x_i, mean_j x_j): 1 when every target points the same way (the shared
    direction dominates), near 0 for targets spread evenly around the origin."""
    x = x.detach().float()
    return F.cosine_similarity(x, x.mean(dim=0, keepdim=True), dim=1).mean()
