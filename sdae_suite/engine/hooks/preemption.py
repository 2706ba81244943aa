"""On SIGTERM / SIGUSR1: finish the iteration, write a checkpoint ``--resume`` continues exactly from, stop.

Every training run of the suite has this hook (tools/pretrain.py and tools/train.py add it, like RNGStateHook). The
signal handler (:mod:`sdae_suite.engine.preemption`) only records the signal; here, after every iteration:

1. the ranks agree (one all-reduce of a flag: a signal reaches the ranks at different moments, and they must all stop
   at the same iteration);
2. with gradient accumulation, the stop waits for the iteration that applies the optimizer step (the partial
   gradients are not in a checkpoint): no half-applied step;
3. every rank's RNG states are gathered, rank 0 writes ``preempted_iter_<N>.pth`` through the crash-safe checkpoint
   hook's atomic backend and points ``last_checkpoint`` at it; an iteration-based run resumes there with mmengine's own
   batch skipping, an epoch-based one through :class:`sdae_suite.engine.loops.ResumableEpochBasedTrainLoop`;
4. :class:`~sdae_suite.engine.preemption.Preempted` is raised on every rank.

The preemption checkpoint is removed once a later scheduled checkpoint (or preemption checkpoint) is written.
"""
from __future__ import annotations

from pathlib import Path

import torch
from mmengine.dist import all_gather_object, all_reduce, barrier, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

from sdae_suite.contracts import LAST_CHECKPOINT_FILE

from ..atomic import atomic_write_bytes
from ..loops import ResumableEpochBasedTrainLoop
from ..preemption import Preempted, received
from ..rng import rng_state
from .checkpoint import PREEMPTION_CHECKPOINT, CrashSafeCheckpointHook, remove_stale_preemption_checkpoints


@HOOKS.register_module()
class PreemptionCheckpointHook(Hook):
    """Checkpoint-and-stop at the iteration boundary after SIGTERM / SIGUSR1 (module docstring)."""

    priority = 'VERY_LOW'  # after every other after_train_iter hook (the scheduled checkpoint included)

    def __init__(self) -> None:
        self._saving: dict | None = None  # what the preemption checkpoint being written adds (before_save_checkpoint)
        self._deferred_logged = False

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        if not isinstance(loop, (IterBasedTrainLoop, ResumableEpochBasedTrainLoop)):
            runner.logger.warning(f'{type(loop).__name__} cannot resume in the middle of an epoch: a preemption '
                                  f'checkpoint of this run resumes at the start of its epoch, not exactly. Use '
                                  f"train_cfg.type='ResumableEpochBasedTrainLoop'.")

    def _agreed(self) -> str | None:
        """The signal, once any rank has received one (all ranks call this at every iteration)."""
        name = received()
        if get_world_size() == 1:
            return name
        flag = torch.tensor([1 if name else 0])
        all_reduce(flag, op='max')  # mmengine moves it to the backend's device (CUDA for NCCL) and back
        return (name or 'a signal on another rank') if int(flag.item()) else None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        name = self._agreed()
        if name is None:
            return
        wrapper = runner.optim_wrapper
        counts = getattr(wrapper, '_accumulative_counts', 1)
        if counts > 1 and getattr(wrapper, '_inner_count', 0) % counts:
            if not self._deferred_logged:
                runner.logger.warning(f'{name}: waiting for the end of the gradient accumulation ({counts} '
                                      f'iterations) to checkpoint a complete optimizer step')
                self._deferred_logged = True
            return
        self._save_and_stop(runner, batch_idx, name)

    def _save_and_stop(self, runner, batch_idx: int, name: str) -> None:
        done = runner.iter + 1  # iterations trained, this one included (the loop counts it after the hooks)
        ckpt_hook = next((h for h in runner.hooks if isinstance(h, CrashSafeCheckpointHook)), None)
        if ckpt_hook is None:
            raise RuntimeError('PreemptionCheckpointHook needs CrashSafeCheckpointHook as the checkpoint hook '
                               "(default_hooks.checkpoint.type='CrashSafeCheckpointHook')")
        loop = runner.train_loop
        states = all_gather_object(rng_state())  # every rank takes part; rank 0 writes them
        extra: dict = {'preemption': dict(signal=name, iteration=done)}
        if isinstance(loop, ResumableEpochBasedTrainLoop):
            extra['preemption']['epoch_batches_done'] = batch_idx + 1
            extra['rng_states'] = loop.epoch_start_rng  # RNGStateHook puts these back before the epoch starts
            extra['rng_states_in_epoch'] = states  # the loop puts these back after skipping the trained batches
        else:
            extra['rng_states'] = states  # RNGStateHook puts these back before the next iteration
        filename = PREEMPTION_CHECKPOINT.format(done)
        out_dir = ckpt_hook.out_dir
        path = str(Path(out_dir) / filename) if '://' not in str(out_dir) else f'{out_dir}/{filename}'
        self._saving = extra
        try:
            # epoch / iter as mmengine's iteration checkpoints: the current epoch (not finished) and the iterations done
            runner.save_checkpoint(out_dir, filename, ckpt_hook.file_client_args, save_optimizer=True,
                                   save_param_scheduler=True, meta=dict(epoch=runner.epoch, iter=done),
                                   by_epoch=False, backend_args=ckpt_hook.backend_args)
        finally:
            self._saving = None
        if is_main_process():
            atomic_write_bytes(path.encode(), Path(runner.work_dir) / LAST_CHECKPOINT_FILE)
            if '://' not in path:
                remove_stale_preemption_checkpoints(Path(path).parent, keep=path)
        barrier()  # no rank leaves (and tears down the process group) before the checkpoint is complete
        runner.logger.warning(f'{name}: wrote {path} after iteration {done}; stopping (exit status for a requeue)')
        raise Preempted(name, done, path)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._saving is not None:
            checkpoint.update(self._saving)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        info = checkpoint.get('preemption')
        if not info:
            return
        loop = runner.train_loop
        if isinstance(loop, ResumableEpochBasedTrainLoop) and 'epoch_batches_done' in info:
            loop.resume_batches = info['epoch_batches_done']
            loop.resume_rng = checkpoint.get('rng_states_in_epoch')
        runner.logger.info(f"resuming from the checkpoint written on {info['signal']} after iteration "
                           f"{info['iteration']}")
