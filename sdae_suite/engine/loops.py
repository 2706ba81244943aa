"""The epoch-based training loop of pretraining and ImageNet classification: mmengine's ``EpochBasedTrainLoop`` that
can also resume in the middle of an epoch, from a preemption checkpoint (``PreemptionCheckpointHook``).

mmengine's loop always resumes at the start of an epoch: a run preempted in the middle of a 300-epoch pretraining
would re-run (and re-apply) the part of the epoch it had already trained. This loop, resumed from a mid-epoch
checkpoint, replays the epoch's data order exactly and skips the batches already trained, the way mmengine's
``IterBasedTrainLoop`` does: the epoch-start RNG states (the checkpoint's ``rng_states``) are put back by
``RNGStateHook`` before the DataLoader iterator is created (same worker seeds), the trained batches are drawn and
dropped (the workers' RNGs advance as they did), then the RNG states of the interrupted iteration are put back.
"""
from __future__ import annotations

from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop

from .rng import rng_state, set_rng_state


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` plus mid-epoch resume (module docstring). Without a mid-epoch checkpoint it runs
    exactly like mmengine's loop."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.epoch_start_rng: list | None = None  # every rank's RNG states when this epoch's data iterator was made
        self.resume_batches = 0  # set from a mid-epoch checkpoint: batches of this epoch already trained
        self.resume_rng: list | None = None  # ... and every rank's RNG states after the last of them

    def run_epoch(self) -> None:
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        # After RNGStateHook has put back the epoch-start states: what a mid-epoch checkpoint of this epoch records.
        self.epoch_start_rng = all_gather_object(rng_state())
        skip, self.resume_batches = self.resume_batches, 0
        if skip:
            self.runner.logger.info(f'resuming in the middle of epoch {self.epoch + 1}: drawing and skipping the '
                                    f'{skip} batches already trained (same data order and augmentation)')
        for idx, data_batch in enumerate(self.dataloader):
            if idx < skip:
                if idx == skip - 1:
                    self._restore_resume_rng()  # before the next batch is drawn (num_workers=0 draws it here)
                continue
            self.run_iter(idx, data_batch)
        if skip and self.resume_rng is not None:
            self.runner.logger.warning(f'the epoch has fewer than the {skip} batches the checkpoint had trained: the '
                                       f'data changed since; training went on from the next epoch')
            self.resume_rng = None
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1

    def _restore_resume_rng(self) -> None:
        states, self.resume_rng = self.resume_rng, None
        if states is None:
            return
        if len(states) != get_world_size():
            self.runner.logger.warning(f'RNG states not restored: the checkpoint was written by {len(states)} '
                                       f'processes, this run has {get_world_size()}; training continues, not '
                                       f'bit-exactly')
            return
        set_rng_state(states[get_rank()])
