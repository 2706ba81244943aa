"""Learning-rate schedules the official MAE-family code uses and mmengine has no exact equivalent for; registered in
mmengine's PARAM_SCHEDULERS under our own names (pretraining and ImageNet fine-tuning / linear probing share them)."""
from __future__ import annotations

from mmengine.optim import LinearLR
from mmengine.registry import PARAM_SCHEDULERS


@PARAM_SCHEDULERS.register_module()
class LinearWarmupFromZeroLR(LinearLR):
    """Linear warmup from exactly 0: lr = base_lr * (step - begin) / (end - begin) for begin <= step <= end, i.e. 0 at
    ``begin`` and the peak at ``end`` -- MAE's / official SdAE's ``util/lr_sched.adjust_learning_rate`` stepped per
    iteration (``convert_to_iter_based=True``).

    Why not mmengine's LinearLR: it is chained (each step multiplies the previous value), so ``start_factor=0`` divides
    by zero at the second step, and it reaches ``end_factor`` at ``end - 1``, one step early. Here the value is closed
    form, and the scheduler also writes the peak at step ``end``, where a chained scheduler that begins there (the
    cosine) reads it as its starting value -- as in the official code, where lr(warmup end) is the cosine's lr_max.
    """

    def __init__(self, optimizer, begin: int = 0, end: int = 1, last_step: int = -1, by_epoch: bool = True,
                 verbose: bool = False):
        self.warmup_steps = end - begin  # set before super().__init__, whose first step() calls _get_value
        super().__init__(optimizer, start_factor=0.0, end_factor=1.0, begin=begin, end=end, last_step=last_step,
                         by_epoch=by_epoch, verbose=verbose)
        self.end = end + 1  # active at step `end` too: writes the peak that the next (chained) scheduler starts from

    def _get_value(self) -> list[float]:
        factor = min(self.last_step, self.warmup_steps) / self.warmup_steps
        return [base * factor for base in self.base_values]
