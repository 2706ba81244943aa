"""Preemption: SIGTERM (Slurm's preemption and ``scancel``) or SIGUSR1 (``--signal=USR1@120``, ahead of the time limit)
makes a run finish its iteration, write a checkpoint and exit with ``EXIT_PREEMPTED``.

The handler only records the signal: all the work happens at the next iteration boundary
(:class:`sdae_suite.engine.hooks.PreemptionCheckpointHook`), where the optimizer step is complete and every rank agrees.
Written by hand because mmengine, the official MAE / SdAE code and mmpretrain do nothing on these signals (a preempted
run loses everything since its last scheduled checkpoint); Lightning's and submitit's handlers belong to their own
trainers.

The entry points call :func:`install` before they build the Runner, so that DataLoader workers forked later inherit the
handler: Slurm signals every process of a job step, workers included, and a worker killed by SIGTERM would make the
main process fail instead of saving.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence

DEFAULT_SIGNALS = ('SIGTERM', 'SIGUSR1')

_received: list[str] = []  # the names of the signals received since install(), first first
_installed: dict[int, object] = {}  # signal number -> the handler install() replaced


class Preempted(Exception):
    """Raised on every rank after the preemption checkpoint is written; the entry points turn it into
    ``run_status.json`` status 'preempted' and exit status ``EXIT_PREEMPTED``."""

    def __init__(self, signal_name: str, iteration: int, checkpoint: str):
        self.signal_name, self.iteration, self.checkpoint = signal_name, iteration, checkpoint
        super().__init__(f'preempted by {signal_name}, checkpoint at iteration {iteration}: {checkpoint}; '
                         f'rerun with --resume to continue exactly there')


def _record(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    if not _received:
        # os.write: no buffered I/O inside a signal handler; one line per process, first signal only
        os.write(2, f'[pid {os.getpid()}] {name} received: finishing the current iteration, then checkpointing\n'
                    .encode())
    _received.append(name)


def install(signals: Sequence[str] = DEFAULT_SIGNALS) -> list[str]:
    """Record ``signals`` instead of dying on them (main thread only); returns the names handled.
    Idempotent; :func:`uninstall` puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return []  # signal.signal only works there; a Runner driven from another thread keeps the default behaviour
    for name in signals:
        num = signal.Signals[name]
        if num not in _installed:
            _installed[num] = signal.signal(num, _record)
    return [signal.Signals(n).name for n in _installed]


def uninstall() -> None:
    for num, previous in list(_installed.items()):
        signal.signal(num, previous if previous is not None else signal.SIG_DFL)
        del _installed[num]
    _received.clear()


def received() -> str | None:
    """The first signal received since :func:`install` (its name), or None."""
    return _received[0] if _received else None


def clear() -> None:
    _received.clear()
