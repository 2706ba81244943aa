"""MAE random masking and SdAE multi-fold partition of the masked patches.

One random permutation per image decides everything: its first ``num_visible`` entries are the student's visible
patches (MAE), the rest -- the masked patches, already in random order -- are cut into K contiguous folds for the
teacher (SdAE). Keeping the masked indices in that order means the student's predictions, gathered once with
``ids_masked``, line up with the concatenated teacher folds without any further reindexing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MaskPlan:
    """Index tensors for one batch (B images, L patches, M = L - num_visible masked).

    ids_keep: [B, num_visible] visible patches (student input), in random order.
    ids_masked: [B, M] masked patches in random order; fold f of image b is a contiguous slice of row b.
    ids_restore: [B, L] inverse permutation (MAE: puts decoder tokens back into image order).
    fold_sizes: sizes of the K folds; they differ by at most one (the first M % K folds are one larger).
    """

    ids_keep: torch.Tensor
    ids_masked: torch.Tensor
    ids_restore: torch.Tensor
    fold_sizes: tuple[int, ...]

    def fold_groups(self) -> list[torch.Tensor]:
        """The folds batched by size: at most two index tensors [B * k, n] (k folds of n patches each).

        Rows of image b are b*k ... b*k + k - 1 (the layout ``VisionTransformer.forward_subset`` expects), and
        concatenating ``g.reshape(B, -1)`` over the groups gives back ``ids_masked``.
        """
        b = self.ids_masked.shape[0]
        groups, start = [], 0
        for n in sorted(set(self.fold_sizes), reverse=True):
            k = self.fold_sizes.count(n)
            groups.append(self.ids_masked[:, start:start + k * n].reshape(b * k, n))
            start += k * n
        return groups


def fold_sizes(num_masked: int, num_folds: int) -> tuple[int, ...]:
    """Split ``num_masked`` patches into ``num_folds`` near-equal folds, larger first: 147, 3 -> (49, 49, 49)."""
    if not 1 <= num_folds <= num_masked:
        raise ValueError(f'num_folds must be in [1, {num_masked}] (the number of masked patches), got {num_folds}')
    q, r = divmod(num_masked, num_folds)
    return (q + 1,) * r + (q,) * (num_folds - r)


def plan_masks(batch: int, num_patches: int, mask_ratio: float, num_folds: int, device: torch.device | str = 'cpu',
               generator: torch.Generator | None = None) -> MaskPlan:
    """MAE's per-sample random masking (argsort of uniform noise), plus the teacher folds of the masked patches."""
    num_visible = int(num_patches * (1 - mask_ratio))
    if not 0 < num_visible < num_patches:
        raise ValueError(f'mask_ratio {mask_ratio} leaves {num_visible} of {num_patches} patches visible; '
                         f'need at least one visible and one masked patch')
    noise = torch.rand(batch, num_patches, device=device, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    return MaskPlan(ids_keep=ids_shuffle[:, :num_visible], ids_masked=ids_shuffle[:, num_visible:],
                    ids_restore=ids_restore, fold_sizes=fold_sizes(num_patches - num_visible, num_folds))
