"""The one writer of ``<work_dir>/run_status.json`` (:class:`sdae_suite.contracts.RunStatus`), for pretraining and
fine-tuning runs alike; rank 0 rewrites it atomically on every change."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from sdae_suite.contracts import RUN_STATUS_FILE, RunStatus, now

from .atomic import atomic_write_json


class RunRecorder:
    """Keeps a run's :class:`RunStatus` on disk: ``running`` from the start, ``finished`` or ``failed`` at the end."""

    def __init__(self, work_dir: str | os.PathLike, status: RunStatus, rank: int = 0):
        self.path = Path(work_dir) / RUN_STATUS_FILE
        self.status = status
        self.rank = rank
        self._write()

    def _write(self) -> None:
        if self.rank == 0:
            atomic_write_json(self.status.to_json(), self.path)

    def finish(self, error: BaseException | str | None = None) -> None:
        """``error``: what stopped the run (an exception, or the explanation to record); None: it finished."""
        if isinstance(error, BaseException):
            error = f'{type(error).__name__}: {error}'
        self.status = replace(self.status, status='failed' if error else 'finished', ended=now(), error=error)
        self._write()
