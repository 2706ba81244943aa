"""A rank that stops answering is named (rank, host, PID) by the survivors before the collective timeout, and recorded
in run_status.json; the collective timeout comes from the config."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from test_pretrain_run import data_root, write_cfg  # noqa: F401

from sdae_suite.engine.hooks.rank_watch import silent_and_behind
from sdae_suite.engine.launch import DEFAULT_DIST_TIMEOUT_S, set_dist_timeout

ROOT = Path(__file__).resolve().parents[1]


def test_silent_and_behind():
    beats = {1: (100.0, 7), 2: (70.0, 7), 3: None, 4: (99.0, 6)}
    assert silent_and_behind(beats, now=101.0, silent_s=20, done=7) == ([2, 3], [4])
    assert silent_and_behind({1: (100.0, 7)}, now=101.0, silent_s=20, done=7) == ([], [])  # a slow step, no one lost


def test_collective_timeout_from_the_config():
    from mmengine.config import Config
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=90))))
    assert set_dist_timeout(cfg) == 'collective timeout 90 s (from the config)'
    cfg = Config(dict())
    assert 'default' in set_dist_timeout(cfg) and cfg.env_cfg.dist_cfg.timeout == DEFAULT_DIST_TIMEOUT_S


def descendants(pid: int) -> list[int]:
    kids = []
    for task in Path(f'/proc/{pid}/task').glob('*'):
        with contextlib.suppress(OSError):
            kids += [int(c) for c in (task / 'children').read_text().split()]
    return kids + [d for k in kids for d in descendants(k)]


@HOOKS.register_module(force=True)
class StopRankTestHook(Hook):
    """Freezes rank ``rank`` (SIGSTOP: its threads too, like a node that drops off the network) when iteration
    ``iteration`` (1-based) starts."""

    def __init__(self, rank: int, iteration: int):
        self.rank, self.iteration = rank, iteration

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        from mmengine.dist import get_rank
        if get_rank() == self.rank and runner.iter + 1 == self.iteration:
            os.kill(os.getpid(), signal.SIGSTOP)


def test_a_frozen_rank_is_named_by_the_others(tmp_path, data_root):
    hooks = ("[dict(type='RankHeartbeatHook', interval_s=0.5, stall_s=2, silent_s=3), "
             "dict(type='StopRankTestHook', rank=1, iteration=2)]")
    cfg = write_cfg(tmp_path / 'tiny.py', data_root, objective='mae', epochs=2, workers=0, extra_hooks=hooks)
    Path(cfg).write_text(Path(cfg).read_text() + "\ncustom_imports = dict(imports=['sdae_suite.pretrain', "
                         "'sdae_suite.engine', 'sdae_suite.engine.safe_io_setup', 'test_rank_watch'], "
                         "allow_failed_imports=False)\n")
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHON=sys.executable, MASTER_PORT=str(port), OMP_NUM_THREADS='1',
               PYTHONPATH=f"{ROOT / 'tests'}:{os.environ.get('PYTHONPATH', '')}")
    wd = tmp_path / 'run'
    proc = subprocess.Popen(['bash', str(ROOT / 'tools/pretrain.sh'), cfg, '2', '--work-dir', str(wd),
                             '--cfg-options', 'env_cfg.dist_cfg.timeout=12'], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    named, failed = None, None
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            try:
                st = json.loads((wd / 'run_status.json').read_text())
            except (OSError, ValueError):
                st = {}
            if named is None and 'stopped answering' in (st.get('error') or ''):
                named = (time.monotonic(), st)
            if st.get('status') == 'failed':
                failed = (time.monotonic(), st)
                break
            time.sleep(0.1)
    finally:
        for pid in [proc.pid, *descendants(proc.pid)]:  # torchrun may put its workers in process groups of their own
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        out = proc.communicate(timeout=30)[0]
    assert named is not None, out[-4000:]
    assert 'collective timeout 12 s (from the config)' in out
    pid = next(int(line.split('pid ')[1].split(')')[0]) for line in [named[1]['error']])
    assert named[1]['error'].startswith(f'rank 1 on host {socket.gethostname()} (pid {pid}) stopped answering: '
                                        f'no heartbeat for ')
    # its last heartbeat came from just before or after its first iteration ended
    assert re.search(r'last finished iteration [01]\)', named[1]['error'])
    assert named[1]['status'] == 'running'  # recorded while the run still waits, before any timeout
    # then gloo's timeout, from the config, ends the run; the status keeps the name in front of the error
    assert failed is not None, out[-4000:]
    assert failed[1]['error'].startswith('rank 1 on host') and ' Then: ' in failed[1]['error']
    assert 'rank 1 on host' in out and 'stopped answering' in out  # in the log of rank 0
