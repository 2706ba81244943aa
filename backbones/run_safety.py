"""Training-run safety that every mmengine run of the suite gets by importing ``backbones``:

- :class:`CrashSafeCheckpointHook`, registered under mmengine's name ``CheckpointHook`` so that every config (ours, and
  mmdet's / mmseg's default runtimes) gets it. mmengine 0.10.7 deletes the oldest checkpoint BEFORE writing the new one
  and writes ``last_checkpoint`` in place: with ``max_keep_ckpts=1`` a kill during the write left no checkpoint at all
  and a ``last_checkpoint`` pointing at the deleted file. Here the order is: write new (atomic: temp file, fsync,
  rename) -> update ``last_checkpoint`` (atomic) -> only then delete the old ones. At the next start, leftover temp
  files are removed and a ``last_checkpoint`` that points at a missing or incomplete file falls back to the newest
  complete checkpoint, with a warning. ``save_best`` rotates in the same order (mmengine deletes the previous best
  checkpoint first). A model with non-finite weights is never written.
- :class:`FiniteGradOptimWrapper`, registered under mmengine's name ``OptimWrapper``: a step whose gradients hold NaN
  or inf is not applied; the run stops with :class:`NonFiniteGradientError` naming the parameters, so the weights (and
  the last checkpoint) stay finite. We stop rather than skip: one non-finite gradient in fp32 means the run has
  diverged or the data is broken, and a silently skipped step hides both. (``AmpOptimWrapper`` keeps its own
  behaviour: fp16 loss scaling produces inf gradients by design, and its GradScaler skips those steps.)
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import torch
from mmengine.dist import barrier, is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.optim import OptimWrapper
from mmengine.registry import HOOKS, OPTIM_WRAPPERS
from mmengine.runner import BaseLoop

from .checkpoint_io import atomic_write_bytes, is_temporary


class NonFiniteGradientError(FloatingPointError):
    """A gradient held NaN/inf; raised before the optimizer step, so the weights are untouched."""


class NonFiniteWeightsError(FloatingPointError):
    """The model holds NaN/inf weights; the checkpoint was not written."""


def _non_finite(named: list[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the tensors holding NaN or inf. One max-abs reduction per tensor batch (``_foreach_norm`` with
    ord=inf cannot overflow the way a 2-norm of large finite values can)."""
    named = [(n, t) for n, t in named if t.is_floating_point() and t.numel()]
    if not named:
        return []
    norms = torch._foreach_norm([t.detach() for _, t in named], float('inf'))
    finite = torch.isfinite(torch.stack([n.float() for n in norms])).tolist()
    return [n for (n, _), ok in zip(named, finite) if not ok]


def _show(names: list[str]) -> str:
    return ', '.join(names[:5]) + (f' and {len(names) - 5} more' if len(names) > 5 else '')


@OPTIM_WRAPPERS.register_module(name='OptimWrapper', force=True)
class FiniteGradOptimWrapper(OptimWrapper):
    """mmengine's ``OptimWrapper`` that refuses to apply a step with non-finite gradients."""

    param_names: dict[int, str] = {}  # id(parameter) -> name in the model; CrashSafeCheckpointHook fills it in

    def step(self, **kwargs) -> None:
        grads = [(self.param_names.get(id(p), f'param_groups[{i}].params[{j}]'), p.grad)
                 for i, g in enumerate(self.optimizer.param_groups) for j, p in enumerate(g['params'])
                 if p.grad is not None]
        bad = _non_finite(grads)
        if bad:
            raise NonFiniteGradientError(
                f'non-finite gradient in {len(bad)} parameter(s) ({_show(bad)}): the optimizer step was not applied, '
                f'so the weights and the last checkpoint are intact. Resume from it with a lower lr, gradient clipping '
                f'(--cfg-options optim_wrapper.clip_grad.max_norm=3.0), or check the data of this iteration.')
        super().step(**kwargs)


def _step_of(path: Path, tmpl: str) -> int | None:
    pattern = re.escape(tmpl).replace(r'\{\}', r'(\d+)')
    m = re.fullmatch(pattern, path.name)
    return int(m.group(1)) if m else None


def is_complete_checkpoint(path: Path) -> bool:
    """A file torch.save finished writing: torch's zip format ends with a central directory."""
    return path.is_file() and zipfile.is_zipfile(path)


@HOOKS.register_module(name='CheckpointHook', force=True)
class CrashSafeCheckpointHook(CheckpointHook):
    """mmengine's CheckpointHook with crash-safe rotation and a finiteness check (module docstring)."""

    def before_run(self, runner) -> None:
        if not isinstance(runner._train_loop, BaseLoop):
            return  # Runner.test() / val() also call before_run: a test never touches the training folder's files
        if isinstance(runner.optim_wrapper, FiniteGradOptimWrapper):
            model = runner.model.module if hasattr(runner.model, 'module') else runner.model
            runner.optim_wrapper.param_names = {id(p): n for n, p in model.named_parameters()}
        if is_main_process():
            self._repair(runner)
        barrier()  # the other ranks read last_checkpoint when they resume

    def _repair(self, runner) -> None:
        """Remove temp files of a killed write; point a dangling ``last_checkpoint`` at the newest complete file."""
        if self.out_dir is not None and '://' in str(self.out_dir):
            return  # a remote out_dir: mmengine's backend for it owns atomicity
        work = Path(runner.work_dir)
        # Where before_train will put the checkpoints: mmengine appends the work dir's name to a separate out_dir.
        out = work if self.out_dir in (None, runner.work_dir) else Path(self.out_dir) / work.name
        for folder in {work, out}:
            for tmp in folder.glob('.*.tmp'):
                if is_temporary(tmp):
                    tmp.unlink(missing_ok=True)
                    runner.logger.warning(f'removed {tmp}: a temporary file left by a run killed while writing')
        record = work / 'last_checkpoint'
        if not record.is_file():
            return
        named = Path(record.read_text().strip())
        if is_complete_checkpoint(named):
            return
        steps = sorted((s, p) for p in out.glob('*.pth') if (s := _step_of(p, self.filename_tmpl)) is not None
                       and is_complete_checkpoint(p))
        problem = 'does not exist' if not named.exists() else 'is incomplete'
        if steps:
            newest = steps[-1][1]
            atomic_write_bytes(str(newest).encode(), record)
            runner.logger.warning(f'{record} named {named}, which {problem}; it now names the newest complete '
                                  f'checkpoint, {newest}')
        else:
            record.unlink()
            runner.logger.warning(f'{record} named {named}, which {problem}, and {out} holds no complete checkpoint: '
                                  f'removed it, so a resumed run starts from scratch')

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """``save_best`` with the same order as the rotation: mmengine deletes the previous best checkpoint before it
        writes the new one, so a kill in between left no best checkpoint at all. Here mmengine sees no previous best
        (it deletes nothing), writes the new one, and the previous one is deleted afterwards."""
        if not self.save_best:
            return
        single = len(self.key_indicators) == 1
        previous = {None: self.best_ckpt_path} if single else \
            {k: self.best_ckpt_path_dict.get(k) for k in self.key_indicators}
        if single:
            self.best_ckpt_path = None
        else:
            self.best_ckpt_path_dict = dict.fromkeys(self.key_indicators)
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            # A key whose score did not improve keeps its previous best; one that improved now names the new file.
            current = {None: self.best_ckpt_path} if single else self.best_ckpt_path_dict
            for key, old in previous.items():
                if current[key] is None:
                    current[key] = old
            if single:
                self.best_ckpt_path = current[None]
        kept = set(current.values())
        for old in previous.values():
            if old is not None and old not in kept and is_main_process():
                self._remove(old)
                runner.logger.info(f'The previous best checkpoint {old} is removed (after the new one was written)')

    def _remove(self, path: str) -> None:
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # deepspeed writes checkpoints as folders
            self.file_backend.rmtree(path)

    def _save_checkpoint_with_step(self, runner, step, meta):
        bad = _non_finite(list(runner.model.state_dict().items()))
        if bad:
            last = Path(runner.work_dir) / 'last_checkpoint'
            good = last.read_text().strip() if last.is_file() else 'none'
            raise NonFiniteWeightsError(
                f'refusing to write checkpoint {self.filename_tmpl.format(step)}: {len(bad)} model tensor(s) hold NaN '
                f'or inf ({_show(bad)}). Last good checkpoint: {good}')
        stale = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            # keep_ckpt_ids is a deque(maxlen=max_keep_ckpts): append() would drop the oldest id; drop it ourselves
            # and delete its file only once the new checkpoint is complete and recorded.
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                stale.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(self.out_dir, ckpt_filename, self.file_client_args, save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
                               backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        atomic_write_bytes(str(self.last_ckpt).encode(), Path(runner.work_dir) / 'last_checkpoint')
        for old in stale:
            self._remove(self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old)))
