"""A process's RNG states (torch, numpy, python, CUDA) as one picklable dict: what RNGStateHook stores with every
checkpoint and what ResumableEpochBasedTrainLoop puts back in the middle of an epoch."""
from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = dict(torch=torch.get_rng_state(), python=random.getstate(),
                 numpy=(np_state[0], np_state[1].tolist(), *np_state[2:]))
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    # torch's RNG states are CPU ByteTensors; a resume on a GPU loads the checkpoint onto the GPU (map_location)
    torch.set_rng_state(state['torch'].cpu())
    random.setstate(state['python'])
    kind, keys, *rest = state['numpy']
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])
