"""Every rank's RNG states in each checkpoint, for a resume that continues exactly like the uninterrupted run."""
from __future__ import annotations

from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

from ..rng import rng_state, set_rng_state


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Saves every rank's torch / numpy / python (and CUDA) RNG state with each checkpoint, so that masking, drop path,
    samplers, data-worker seeds and augmentation continue exactly as without interruption; used by pretraining
    (epoch-based) and by tools/train.py's fine-tuning runs (usually iteration-based).

    mmengine writes checkpoints on rank 0 only (``Runner.save_checkpoint`` is master-only), so the states are gathered
    on all ranks just before: at the end of every epoch, and after an iteration at which the CheckpointHook saves.
    They are put back at the start of the next unit of work (epoch for an epoch-based loop, iteration for an
    iteration-based one), in the resumed run from the checkpoint and in the uninterrupted run from memory alike: what
    happens in between only in the uninterrupted run (a validation draws from the RNG) then makes no difference.
    Iteration-based resume is exact when the train dataloader has workers (their RNGs are seeded by mmengine and
    replayed by its skip of the trained batches); with ``num_workers=0`` augmentation runs on the main process's RNG,
    which that skip consumes, and only the model's randomness resumes exactly.
    """

    priority = 'LOW'  # after the other end-of-iteration / epoch hooks, before CheckpointHook (VERY_LOW)

    def __init__(self):
        self._gathered: list | None = None  # the states the next checkpoint holds
        self._pending: list | None = None  # the states to put back at the next epoch / iteration start
        self._loaded = False  # the pending states come from a checkpoint file (logged when put back)

    def _gather(self) -> None:
        self._gathered = self._pending = all_gather_object(rng_state())
        self._loaded = False

    def after_train_epoch(self, runner) -> None:
        self._gather()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        # The condition of mmengine's CheckpointHook.after_train_iter; every rank must take part in the gather.
        ckpt = next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
        if ckpt is not None and not ckpt.by_epoch and (
                ckpt.every_n_train_iters(runner, ckpt.interval, ckpt.save_begin)
                or (ckpt.save_last and ckpt.is_last_train_iter(runner))):
            self._gather()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._gathered is not None:
            checkpoint['rng_states'] = self._gathered

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending, self._loaded = checkpoint.get('rng_states'), True

    def _restore(self, runner) -> None:
        states, self._pending = self._pending, None
        if states is None:
            return
        if len(states) != get_world_size():
            runner.logger.warning(f'RNG states not restored: the checkpoint was written by {len(states)} '
                                  f'processes, this run has {get_world_size()}; training continues, not bit-exactly')
        else:
            set_rng_state(states[get_rank()])
            if self._loaded:
                runner.logger.info('restored the RNG states of the interrupted run')

    def before_train_epoch(self, runner) -> None:
        if not isinstance(runner.train_loop, IterBasedTrainLoop):
            self._restore(runner)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if isinstance(runner.train_loop, IterBasedTrainLoop):
            self._restore(runner)
