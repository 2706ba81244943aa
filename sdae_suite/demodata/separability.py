"""How well a labelled image folder's classes can be told apart by local texture alone, with no learning from images.

The descriptor is a bag of contrast-normalised patch energies: grey 8x8 patches (stride 4) of the image resized to the
size the demo models see, each patch centred and scaled to unit norm (so colour and brightness drop out), projected on
the 32 leading principal components of all patches, squared (so the pattern's phase drops out) and averaged over the
image. A DINO-style k-NN on it (cosine, k=20, temperature 0.07) is the reference: if this cannot beat chance, the
classes are not visible at that size and no pretrained encoder's k-NN probe can be expected to either. A mean-colour
descriptor is the control: near chance means colour is no shortcut to the class.

Hand-written because it is a property of our generator's design (texture classes, random colours), not a general
tool: it measured the v1 pool at chance (16.1 %, chance 16.7 %: its textures vanish in the resize to 64 px) and the
v2 pool well above it (see tests/test_demo_data.py and docs/demo.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sdae_suite.probes.data import class_split, load_images
from sdae_suite.probes.knn import knn_top1


def texture_energy(images: torch.Tensor, basis: torch.Tensor | None = None, patch: int = 8
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """images: uint8 [N, 3, S, S] -> (descriptors [N, 32], basis [patch*patch, 32]); the basis is fitted on these
    images when not given (fit on the training images, reuse for the test images)."""
    grey = images.float().mean(1, keepdim=True) / 255
    p = F.unfold(grey, patch, stride=patch // 2).transpose(1, 2)  # [N, L, patch*patch]
    p = p - p.mean(-1, keepdim=True)
    p = p / (p.norm(dim=-1, keepdim=True) + 0.05)
    if basis is None:
        flat = p.reshape(-1, p.shape[-1])
        pick = torch.randperm(len(flat), generator=torch.Generator().manual_seed(0))[:20000]
        basis = torch.pca_lowrank(flat[pick], q=32, center=True)[2]
    return (p @ basis).pow(2).mean(1), basis


def mean_colour(images: torch.Tensor) -> torch.Tensor:
    """images: uint8 [N, 3, S, S] -> [N, 6] mean and std of each channel."""
    x = images.float() / 255
    return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)


def separability(root: str, size: int = 64, per_class: tuple[int, int] = (150, 50)) -> dict[str, float]:
    """k-NN top-1 (%) of the texture-energy and mean-colour descriptors on an ImageNet-style folder, split as the
    probes split it (every 5th image of a class held out). -> {'texture_energy', 'mean_colour', 'chance'}"""
    split = class_split(root, None, 5, *per_class)
    xtr, xte = load_images([p for p, _ in split.train], size), load_images([p for p, _ in split.test], size)
    ytr, yte = torch.tensor([c for _, c in split.train]), torch.tensor([c for _, c in split.test])
    n = len(split.classes)
    etr, basis = texture_energy(xtr)
    ete, _ = texture_energy(xte, basis)
    return {'texture_energy': knn_top1(etr, ytr, ete, yte, n, 20, 0.07),
            'mean_colour': knn_top1(mean_colour(xtr), ytr, mean_colour(xte), yte, n, 20, 0.07),
            'chance': 100.0 / n}
