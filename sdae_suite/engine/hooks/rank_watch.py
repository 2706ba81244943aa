"""Name the rank that stopped answering, before the collective timeout ends the run.

When one rank of a multi-node run dies (a node lost, the OOM killer, a hard hang), the others block in the next
all-reduce until the NCCL / gloo timeout, and then fail with a message that names no one. Here each rank publishes a
heartbeat from a thread (it keeps beating while the main thread waits in a collective) to the process group's own
key-value store, with the iteration its training has finished. A rank whose training has made no progress for
``stall_s`` seconds (or that has received SIGTERM / SIGUSR1 and is stuck) reads the others' heartbeats and logs, each
time the finding changes, which ranks are silent (process or node gone) or behind (alive, still in an earlier
iteration), with their host and PID. The lowest surviving rank also records it in ``run_status.json`` (the pipeline
prints it), so that the cause outlives a run Slurm then kills. If the store itself does not answer, the rank hosting
it (rank 0) is the one that stopped.

Written by hand: torch's NCCL flight recorder and the elastic agent's error files report collectives and exceptions,
not a rank that went silent, and mmengine has nothing on it. ``_get_default_store`` is the one private torch call; the
hook says so and stays off when it is missing.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..preemption import received

KEY = 'sdae_suite/heartbeat/{}'


def silent_and_behind(beats: dict[int, tuple[float, int] | None], now: float, silent_s: float,
                      done: int) -> tuple[list[int], list[int]]:
    """From every other rank's last heartbeat (time, iterations done; None: never beat), the ranks silent for over
    ``silent_s`` seconds and the live ranks that have finished fewer iterations than this rank's ``done``."""
    silent = sorted(r for r, b in beats.items() if b is None or now - b[0] > silent_s)
    behind = sorted(r for r, b in beats.items() if b is not None and r not in silent and b[1] < done)
    return silent, behind


@HOOKS.register_module()
class RankHeartbeatHook(Hook):
    """Heartbeats of every rank, and a log line naming the rank that stopped answering (module docstring).

    Args:
        interval_s: seconds between heartbeats (and checks).
        stall_s: seconds without training progress on this rank before it looks at the others. Keep it below the
            collective timeout (``env_cfg.dist_cfg.timeout``) so that the line comes before the timeout's error.
        silent_s: a rank whose last heartbeat is older than this is reported as stopped.
    """

    priority = 'VERY_HIGH'

    def __init__(self, interval_s: float = 5.0, stall_s: float = 60.0, silent_s: float = 20.0):
        self.interval_s, self.stall_s, self.silent_s = interval_s, stall_s, silent_s
        self.on_report: Callable[[str], None] | None = None  # set by the entry point: records the finding
        self._peers: list[dict] = []
        self._store = None
        self._done = 0
        self._progress = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: tuple = ((), ())  # the silent and the behind ranks last reported
        self.reported: str | None = None

    def before_train(self, runner) -> None:
        if get_world_size() == 1:
            return
        self._peers = all_gather_object(dict(rank=get_rank(), host=socket.gethostname(), pid=os.getpid()))
        try:
            from torch.distributed.distributed_c10d import _get_default_store  # private, stable since torch 1.x
            self._store = _get_default_store()
        except (ImportError, RuntimeError) as e:
            runner.logger.warning(f'rank heartbeats off: no process-group store ({e})')
            return
        self._logger = runner.logger
        self._done = runner.iter
        self._progress = time.monotonic()
        self._beat()
        self._thread = threading.Thread(target=self._watch, name='rank-heartbeat', daemon=True)
        self._thread.start()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._done, self._progress = runner.iter + 1, time.monotonic()  # the loop counts this iteration after hooks

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._progress = time.monotonic()

    def after_train_epoch(self, runner) -> None:
        self._progress = time.monotonic()

    def after_train(self, runner) -> None:
        self._stop.set()

    def _beat(self) -> None:
        self._store.set(KEY.format(get_rank()), f'{time.time()} {self._done}')

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._beat()
            except Exception as e:  # the store lives in rank 0's process: it is gone
                self._report(self._store_gone(e))
                return
            stalled = time.monotonic() - self._progress
            if stalled > self.stall_s or (received() and stalled > 2 * self.interval_s):
                try:
                    message = self._look(stalled)
                except Exception as e:
                    self._report(self._store_gone(e))
                    return
                if message:
                    self._report(message)
            else:
                self._seen = ((), ())  # progress again: a later stall is reported afresh

    def _look(self, stalled: float) -> str | None:
        me = get_rank()
        beats: dict[int, tuple[float, int] | None] = {}
        for peer in self._peers:
            r = peer['rank']
            if r == me:
                continue
            key = KEY.format(r)
            if self._store.check([key]):
                t, done = self._store.get(key).decode().split()
                beats[r] = (float(t), int(done))
            else:
                beats[r] = None
        silent, behind = silent_and_behind(beats, time.time(), self.silent_s, self._done)
        if (tuple(silent), tuple(behind)) == self._seen:
            return None  # nothing new: every rank is alive and as far along (a slow step), or already reported
        self._seen = (tuple(silent), tuple(behind))  # a rank behind that then goes silent is reported again
        parts = []
        for r in silent:
            b = beats[r]
            last = 'never sent a heartbeat' if b is None else \
                f'no heartbeat for {time.time() - b[0]:.0f} s (last finished iteration {b[1]})'
            parts.append(f'rank {r} on host {self._where(r)} stopped answering: {last}')
        for r in behind:
            parts.append(f'rank {r} on host {self._where(r)} is alive but still in iteration {beats[r][1] + 1}')
        self._lowest_alive = min([me] + [r for r in beats if r not in silent])
        return (f'{"; ".join(parts)}. Rank {me} on {socket.gethostname()} has waited {stalled:.0f} s after '
                f'iteration {self._done}.')

    def _where(self, rank: int) -> str:
        peer = self._peers[rank]
        return f"{peer['host']} (pid {peer['pid']})"

    def _store_gone(self, error: Exception) -> str:
        self._lowest_alive = get_rank()  # rank 0 is gone; every survivor records it (the writes are atomic)
        return (f'rank 0 on host {self._where(0)} stopped answering: the process-group store it hosts does not '
                f'respond ({type(error).__name__}: {error}). Rank {get_rank()} on {socket.gethostname()}, after '
                f'iteration {self._done}.')

    def _report(self, message: str) -> None:
        self.reported = message
        self._logger.error(message)
        if self.on_report is not None and getattr(self, '_lowest_alive', None) == get_rank():
            self.on_report(message)
