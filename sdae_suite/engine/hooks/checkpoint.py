"""The checkpoint hook every run of the suite uses, named in each of our configs (tests/test_layers.py checks them):
``default_hooks = dict(checkpoint=dict(type='CrashSafeCheckpointHook', ...))``.

mmengine 0.10.7's ``CheckpointHook`` deletes the oldest checkpoint BEFORE writing the new one and writes
``last_checkpoint`` in place: with ``max_keep_ckpts=1`` a kill during the write left no checkpoint at all and a
``last_checkpoint`` pointing at the deleted file. Here the order is: write new (atomic: temp file, fsync, rename,
through the ``sdae_atomic_local`` file backend) -> update ``last_checkpoint`` (atomic) -> only then delete the old
ones. At the next start, leftover temp files are removed and a ``last_checkpoint`` that points at a missing or
incomplete file falls back to the newest complete checkpoint, with a warning. ``save_best`` rotates in the same order
(mmengine deletes the previous best checkpoint first). A model with non-finite weights is never written.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

from mmengine.dist import barrier, is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop

from sdae_suite.contracts import LAST_CHECKPOINT_FILE

from ..atomic import atomic_write_bytes, is_temporary
from ..checkpoint_io import ATOMIC_BACKEND
from ..checkpoint_space import log_checkpoint_space
from ..optim_wrapper import FiniteGradOptimWrapper, non_finite_names, show_names


class NonFiniteWeightsError(FloatingPointError):
    """The model holds NaN/inf weights; the checkpoint was not written."""



def _step_of(path: Path, tmpl: str) -> int | None:
    pattern = re.escape(tmpl).replace(r'\{\}', r'(\d+)')
    m = re.fullmatch(pattern, path.name)
    return int(m.group(1)) if m else None


def is_complete_checkpoint(path: Path) -> bool:
    """A file torch.save finished writing: torch's zip format ends with a central directory."""
    return path.is_file() and zipfile.is_zipfile(path)


@HOOKS.register_module()
class CrashSafeCheckpointHook(CheckpointHook):
    """mmengine's CheckpointHook with crash-safe rotation and a finiteness check (module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        local = self.out_dir is None or '://' not in str(self.out_dir)
        if local and self.backend_args is None and self.file_client_args is None:
            self.backend_args = {'backend': ATOMIC_BACKEND}  # every checkpoint this hook writes: temp, fsync, rename

    def before_run(self, runner) -> None:
        if not isinstance(runner._train_loop, BaseLoop):
            return  # Runner.test() / val() also call before_run: a test never touches the training folder's files
        if isinstance(runner.optim_wrapper, FiniteGradOptimWrapper):
            model = runner.model.module if hasattr(runner.model, 'module') else runner.model
            runner.optim_wrapper.param_names = {id(p): n for n, p in model.named_parameters()}
        if is_main_process():
            self._repair(runner)
        barrier()  # the other ranks read last_checkpoint when they resume

    def before_train(self, runner) -> None:
        super().before_train(runner)  # sets out_dir and the file backend
        if is_main_process() and '://' not in str(self.out_dir):
            # Hours in, a full disk stops the run; its first lines say whether the checkpoints will fit.
            log_checkpoint_space(runner, self)

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
        record = work / LAST_CHECKPOINT_FILE
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
        bad = non_finite_names(list(runner.model.state_dict().items()))
        if bad:
            last = Path(runner.work_dir) / LAST_CHECKPOINT_FILE
            good = last.read_text().strip() if last.is_file() else 'none'
            raise NonFiniteWeightsError(
                f'refusing to write checkpoint {self.filename_tmpl.format(step)}: {len(bad)} model tensor(s) hold NaN '
                f'or inf ({show_names(bad)}). Last good checkpoint: {good}')
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
        atomic_write_bytes(str(self.last_ckpt).encode(), Path(runner.work_dir) / LAST_CHECKPOINT_FILE)
        for old in stale:
            self._remove(self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old)))
        if '://' not in str(self.last_ckpt):  # a preemption checkpoint is superseded once a later one is recorded
            remove_stale_preemption_checkpoints(Path(self.last_ckpt).parent)


PREEMPTION_CHECKPOINT = 'preempted_iter_{}.pth'  # written by PreemptionCheckpointHook through this hook's backend


def remove_stale_preemption_checkpoints(folder: str | Path, keep: str | Path | None = None) -> list[Path]:
    """Delete the preemption checkpoints in ``folder`` other than ``keep``; called once a newer checkpoint is
    recorded in ``last_checkpoint``. Returns what was deleted."""
    keep = Path(keep) if keep is not None else None
    stale = [p for p in Path(folder).glob(PREEMPTION_CHECKPOINT.format('*')) if p != keep]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
