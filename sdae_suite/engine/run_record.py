"""The one writer of ``<work_dir>/run_status.json`` (:class:`sdae_suite.contracts.RunStatus`), for pretraining and
fine-tuning runs alike; rank 0 rewrites it atomically on every change."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from sdae_suite.contracts import RUN_STATUS_FILE, RunStatus, now

from .atomic import atomic_write_json
from .hooks.rank_watch import RankHeartbeatHook
from .preemption import Preempted


class RunRecorder:
    """Keeps a run's :class:`RunStatus` on disk: ``running`` from the start, ``finished``, ``failed`` or ``preempted``
    at the end."""

    def __init__(self, work_dir: str | os.PathLike, status: RunStatus, rank: int = 0):
        self.path = Path(work_dir) / RUN_STATUS_FILE
        self.status = status
        self.rank = rank
        self._write()

    def _write(self) -> None:
        if self.rank == 0:
            atomic_write_json(self.status.to_json(), self.path)

    def watch(self, runner) -> None:
        """Record in the status what the runner's RankHeartbeatHook finds (a rank that stopped answering)."""
        for hook in runner.hooks:
            if isinstance(hook, RankHeartbeatHook):
                hook.on_report = self.lost_rank

    def lost_rank(self, message: str) -> None:
        """What RankHeartbeatHook found (a rank that stopped answering), recorded at once by the lowest live rank
        (rank 0 may be the lost one), so that it outlives a run Slurm kills next; kept in front of the final error."""
        self.lost = message
        self.status = replace(self.status, error=message)
        atomic_write_json(self.status.to_json(), self.path)

    def finish(self, error: BaseException | str | None = None) -> None:
        """``error``: what stopped the run (an exception, or the explanation to record); None: it finished."""
        if isinstance(error, BaseException):
            error = f'{type(error).__name__}: {error}'
        if error and getattr(self, 'lost', None):
            error = f'{self.lost} Then: {error}'
        self.status = replace(self.status, status='failed' if error else 'finished', ended=now(), error=error)
        self._write()

    def preempted(self, stop: Preempted) -> None:
        """The run stopped on a signal after writing the checkpoint ``--resume`` continues from."""
        self.status = replace(self.status, status='preempted', ended=now(), error=str(stop),
                              checkpoint=stop.checkpoint, iteration=stop.iteration)
        self._write()
