"""DataLoader worker seeding shared by pretraining and ImageNet classification; registered in mmengine's FUNCTIONS.

mmengine's default ``worker_init_fn`` (used whenever ``randomness.seed`` is set) seeds every worker with the same
numbers every epoch: augmentations would repeat epoch after epoch. This one keeps PyTorch's per-epoch seeds instead.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from mmengine.registry import FUNCTIONS


@FUNCTIONS.register_module()
def seed_pretrain_worker(worker_id: int) -> None:
    """Seed numpy / random in a DataLoader worker from the torch seed torch gave it (base seed + worker id).

    The base seed is drawn from the main process's torch RNG each epoch, so augmentations differ between epochs
    (mmengine's default re-seeds workers identically every epoch) and are reproduced exactly after a resume, which
    restores that RNG.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
