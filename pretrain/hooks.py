"""mmengine hooks of pretraining: EMA teacher, checkpoint provenance, skipped images. (The RNG state in checkpoints,
used by fine-tuning too, is :class:`sdae_suite.engine.hooks.RNGStateHook`.)"""
from __future__ import annotations

import math
import subprocess
from pathlib import Path

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import nn

from sdae_suite.contracts import PretrainMeta


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model


def cosine_momentum(step: int, total: int, start: float, end: float) -> float:
    """DINO's cosine schedule: ``start`` at step 0, rising towards ``end`` as step -> total."""
    return end - (end - start) * (math.cos(math.pi * step / total) + 1) / 2


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, for every parameter (DINO / official SdAE)."""
    t = list(teacher.parameters())
    s = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t, momentum)
    torch._foreach_add_(t, s, alpha=1 - momentum)


@HOOKS.register_module()
class EMATeacherHook(Hook):
    """Updates ``model.teacher`` from ``model.encoder`` by EMA with a cosine momentum schedule (``momentum`` at the
    start, rising towards ``end_momentum``). Three schedules, named after the official ``--ema_op``:

    - ``by_epoch=True`` (official ``per_epoch``, the default): once at the end of each epoch, momentum from the epoch
      index over max_epochs (official ``momentum_schedule[epoch]``).
    - ``by_epoch=False, momentum_by_epoch=True`` (official ``per_ite``): after every iteration, with the momentum of
      the current EPOCH (the per-epoch schedule's value, applied every iteration -- so it needs values much closer to
      1 than the per-epoch default, as the official code's comment says).
    - ``by_epoch=False`` (``momentum_by_epoch=False``, ours): after every iteration, momentum from the iteration index
      over max_iters (DINO's per-iteration schedule; the demo configs use it).

    With gradient accumulation the per-iteration modes update only on optimizer steps (the student does not change in
    between); the official per_ite code updates after every micro-batch -- identical at accumulative_counts=1.
    The momentum is a function of the runner's position only and the teacher lives in the model's state_dict, so a
    resumed run continues the schedule exactly. Runs before CheckpointHook: a checkpoint holds the updated teacher.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, momentum: float = 0.96, end_momentum: float = 0.99, by_epoch: bool = True,
                 momentum_by_epoch: bool | None = None):
        if by_epoch and momentum_by_epoch is False:
            raise ValueError('EMATeacherHook: by_epoch=True updates once per epoch, so the momentum can only follow '
                             'the epoch (momentum_by_epoch must be True or None)')
        self.momentum, self.end_momentum, self.by_epoch = momentum, end_momentum, by_epoch
        self.momentum_by_epoch = by_epoch if momentum_by_epoch is None else momentum_by_epoch

    def before_train(self, runner) -> None:
        model = unwrap(runner.model)
        if getattr(model, 'teacher', None) is None:
            runner.logger.info('EMATeacherHook: the model has no teacher (objective mae): nothing to update')
            return
        names_t = [n for n, _ in model.teacher.named_parameters()]
        names_s = [n for n, _ in model.encoder.named_parameters()]
        assert names_t == names_s, 'teacher and student encoder must have the same parameters in the same order'

    def _update(self, runner) -> float | None:
        """One EMA step; -> the momentum used, or None when the model has no teacher (objective mae)."""
        model = unwrap(runner.model)
        if getattr(model, 'teacher', None) is None:
            return None
        if self.momentum_by_epoch:
            m = cosine_momentum(runner.epoch, runner.max_epochs, self.momentum, self.end_momentum)
        else:
            m = cosine_momentum(runner.iter, runner.max_iters, self.momentum, self.end_momentum)
        ema_update(model.teacher, model.encoder, m)
        runner.message_hub.update_scalar('train/ema_momentum', m)
        return m

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        # With gradient accumulation the student only changes on optimizer steps; follow it only then.
        if not self.by_epoch and runner.optim_wrapper.should_update():
            self._update(runner)

    def after_train_epoch(self, runner) -> None:
        if self.by_epoch and (m := self._update(runner)) is not None:
            runner.logger.info(f'EMA teacher updated at the end of epoch {runner.epoch + 1} with momentum {m:.5f}')


def git_commit(path: str | Path = Path(__file__).parent) -> str:
    """HEAD commit of the repository holding ``path``, with '+dirty' for uncommitted changes; 'unknown' outside git."""
    try:
        run = lambda *a: subprocess.run(['git', *a], cwd=path, capture_output=True, text=True, timeout=10)
        head = run('rev-parse', 'HEAD')
        if head.returncode:
            return 'unknown'
        dirty = run('status', '--porcelain', '--untracked-files=no').stdout.strip()
        return head.stdout.strip() + ('+dirty' if dirty else '')
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


@HOOKS.register_module()
class PretrainMetaHook(Hook):
    """Writes ``meta['sdae']`` (:class:`sdae_suite.contracts.PretrainMeta`) into every checkpoint;
    tools/export_backbone.py copies it into the exported backbone."""

    def __init__(self):
        self.commit = git_commit()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        model = unwrap(runner.model)
        checkpoint['meta']['sdae'] = PretrainMeta(method=model.objective, arch=model.arch,
                                                  epoch=checkpoint['meta']['epoch'],
                                                  config=str(runner.cfg.filename or ''), git_commit=self.commit)
