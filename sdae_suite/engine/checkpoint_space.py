"""How many bytes a run's checkpoints will take, estimated at the start of training, so that a run that would fill
its disk after hours says so in its first lines (``CrashSafeCheckpointHook.before_train`` logs it, and warns when the
work dir's file system has less free).

Written by hand because neither mmengine nor torch sizes a checkpoint before writing it; the size is that of the
files mmengine's ``Runner.save_checkpoint`` writes:

- model state: every tensor of ``model.state_dict()`` (buffers, and submodules such as the EMA teacher of our
  pretraining model, which is frozen but saved), each storage counted once;
- optimizer state: the optimizer's per-parameter slots, each the size of its parameter, for the TRAINABLE parameters
  only (a frozen parameter gets no gradient, so torch's optimizers keep no state for it). The optimizer state is
  created at the first step, which is why it is estimated from the optimizer's type and settings;
- small extras: one zip record per tensor, meta / schedulers / RNG states, and the message hub's logged scalars, which
  grow with every iteration (mmengine keeps each scalar's whole history, up to a million values, in the checkpoint).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from torch import nn

from .atomic import format_bytes, free_bytes

# torch.save's zip format: one record (local header, name, 64-byte alignment, central directory entry) plus pickle
# references per tensor, measured at about 280-340 bytes with torch 2.x.
RECORD_BYTES = 320
# meta (the config text, the environment), parameter schedulers, RNG states of every rank, the loss scaler.
FIXED_EXTRA_BYTES = 64 * 1024
# The message hub's history: a float64 value and an int64 count per logged scalar per iteration (18 bytes measured),
# for up to 16 scalars (the fine-tuning runs log 4-6, pretraining with its monitors about 12); at most 1e6 values each.
SCALAR_BYTES_PER_ITER = 18 * 16
HISTORY_LIMIT = 1_000_000

# Per-parameter state tensors of the optimizers the suite's configs use; another optimizer is assumed to keep 2.
ADAM_FAMILY = ('Adam', 'AdamW', 'Adamax', 'NAdam', 'RAdam')
MOMENTUM_ONE = ('SGD', 'LARS', 'MAELARS', 'Lion')
UNKNOWN_SLOTS = 2


@dataclass(frozen=True)
class CheckpointSpace:
    """The bytes one checkpoint takes (``per_checkpoint``), how many exist at once at most (``count``), and why."""

    model_bytes: int
    optimizer_bytes: int
    extra_bytes: int
    count: int
    optimizer_note: str
    count_note: str
    upper: bool  # the optimizer is not one this module knows: its size is an upper estimate

    @property
    def per_checkpoint(self) -> int:
        return self.model_bytes + self.optimizer_bytes + self.extra_bytes

    @property
    def total(self) -> int:
        return self.per_checkpoint * self.count


def optimizer_slots(optimizer: torch.optim.Optimizer) -> tuple[int, str, bool]:
    """(state tensors per trainable parameter, why, whether it is a guess) from the optimizer's type and settings."""
    name = type(optimizer).__name__
    group = optimizer.param_groups[0] if optimizer.param_groups else {}
    if name in ADAM_FAMILY:
        slots = 3 if group.get('amsgrad', False) else 2  # amsgrad keeps the running maximum too
        return slots, f'{name}: {slots} slots per trainable parameter', False
    if name in MOMENTUM_ONE:
        # torch's SGD and mmpretrain's LARS keep no buffer without momentum; MAE's LARS always keeps one (``mu``).
        slots = 0 if name in ('SGD', 'LARS') and not group.get('momentum', 0) else 1
        return slots, f'{name}: {slots} slot per trainable parameter', False
    return UNKNOWN_SLOTS, f'{name}: not known here, assumed {UNKNOWN_SLOTS} slots per trainable parameter (an upper ' \
        f'estimate for most optimizers)', True


def estimate_checkpoint_space(model: nn.Module, optimizers: Iterable[torch.optim.Optimizer], count: int,
                              iterations: int, count_note: str = '') -> CheckpointSpace:
    """Bytes of ``count`` checkpoints of ``model`` (unwrapped) with ``optimizers`` (none: saved without optimizer),
    written after ``iterations`` iterations at most (module docstring)."""
    state = model.state_dict()
    seen: set[int] = set()
    model_bytes = 0
    for t in state.values():
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:  # tied weights: saved once
            seen.add(t.untyped_storage().data_ptr())
            model_bytes += t.untyped_storage().nbytes()
    records = len(state)
    optimizer_bytes, notes, upper = 0, [], False
    for opt in optimizers:
        slots, note, guess = optimizer_slots(opt)
        params = {id(p): p for g in opt.param_groups for p in g['params'] if p.requires_grad}.values()
        optimizer_bytes += slots * sum(p.numel() * p.element_size() for p in params)
        records += (slots + 1) * len(params)  # the slots, and a step counter for most optimizers
        notes.append(note)
        upper |= guess
    extra = FIXED_EXTRA_BYTES + RECORD_BYTES * records + SCALAR_BYTES_PER_ITER * min(iterations, HISTORY_LIMIT)
    return CheckpointSpace(model_bytes=model_bytes, optimizer_bytes=optimizer_bytes, extra_bytes=extra, count=count,
                           optimizer_note='; '.join(notes) or 'saved without optimizer state', count_note=count_note,
                           upper=upper)


def checkpoints_at_once(done: int, last: int, interval: int, save_begin: int, save_last: bool, max_keep: int,
                        n_best: int) -> tuple[int, str]:
    """How many checkpoints exist at once at most, for steps (epochs or iterations) ``done + 1 .. last``, with
    mmengine's CheckpointHook rule (saved at step s when s - save_begin is a non-negative multiple of ``interval``,
    and at the last step with ``save_last``) and the crash-safe rotation (the new file is written before the oldest
    is deleted, so ``max_keep + 1`` exist for a moment); ``n_best``: the best checkpoints ``save_best`` keeps."""
    saves = 0
    if interval > 0 and last > done:
        first = max(done + 1, save_begin)
        saves = max(0, (last - save_begin) // interval - (first - 1 - save_begin) // interval)
        if save_last and (last - save_begin) % interval != 0:
            saves += 1
    elif save_last and last > done:
        saves = 1
    best = f' + {n_best} best' if n_best else ''
    if max_keep > 0 and saves > max_keep:
        return max_keep + 1 + n_best, f'max_keep_ckpts={max_keep}, plus the new one before the oldest is deleted{best}'
    if max_keep > 0:
        return saves + n_best, f'the {saves} this run saves (max_keep_ckpts={max_keep}){best}'
    return saves + n_best, f'all {saves} this run saves (max_keep_ckpts={max_keep} keeps every one){best}'


def log_checkpoint_space(runner: Any, hook: Any) -> tuple[CheckpointSpace, int | None]:
    """Estimate the checkpoints ``hook`` (a CheckpointHook, after its ``before_train``) will write in ``runner``'s
    training, log it, and warn when the file system of ``hook.out_dir`` has less free. Returns (estimate, free)."""
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    wrapper = runner.optim_wrapper
    wrappers = list(wrapper.values()) if isinstance(wrapper, OptimWrapperDict) else [wrapper]
    optimizers = [w.optimizer for w in wrappers if hasattr(w, 'optimizer')] if hook.save_optimizer else []
    done, last = (runner.epoch, runner.max_epochs) if hook.by_epoch else (runner.iter, runner.max_iters)
    n_best = len(getattr(hook, 'key_indicators', None) or []) if hook.save_best else 0
    count, why = checkpoints_at_once(done, last, hook.interval, hook.save_begin, hook.save_last, hook.max_keep_ckpts,
                                     n_best)
    space = estimate_checkpoint_space(model, optimizers, count, runner.max_iters, why)
    free = free_bytes(hook.out_dir)
    upper = ', an upper estimate' if space.upper else ''
    runner.logger.info(
        f'checkpoint space: about {format_bytes(space.per_checkpoint)} each (model {format_bytes(space.model_bytes)}, '
        f'optimizer {format_bytes(space.optimizer_bytes)} [{space.optimizer_note}], extras '
        f'{format_bytes(space.extra_bytes)}), {count} at most at once [{why}]: {format_bytes(space.total)}{upper}; '
        f'{"unknown" if free is None else format_bytes(free)} free in {hook.out_dir}')
    if free is not None and free < space.total:
        runner.logger.warning(
            f'{hook.out_dir} has {format_bytes(free)} free, less than the {format_bytes(space.total)} the checkpoints '
            f'of this run will take ({count} x {format_bytes(space.per_checkpoint)}{upper}): the run will stop with a '
            f'disk-full error at the checkpoint that does not fit (the earlier ones stay intact). Free space, lower '
            f'default_hooks.checkpoint.max_keep_ckpts, or point --work-dir to a file system with room')
    return space, free
