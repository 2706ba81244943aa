"""Fine-tuning is seeded by default and a resumed iteration-based run continues exactly like the uninterrupted one
(RNGStateHook in every tools/train.py run), even with a validation at the checkpoint's iteration."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from sdae_suite.commands import make_demo_data
from sdae_suite.commands import train as train_tool
from sdae_suite.engine.checkpoint_io import safe_torch_load

ROOT = Path(__file__).resolve().parents[1]
SEG = str(ROOT / 'seg_configs/sdae_upernet_demo.py')
# One data worker: augmentation then runs on the worker's RNG, which mmengine seeds and replays when it skips the
# trained batches on resume (with num_workers=0 it would share the main process's RNG with that skip).
OPTS = ['train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1',
        'param_scheduler=[]', 'train_dataloader.batch_size=2', 'train_dataloader.num_workers=1',
        'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False',
        # a smaller ViT and heads: the same code paths at a tenth of the time
        'model.backbone.depth=4', 'model.backbone.out_indices=[0,1,2,3]', 'model.backbone.embed_dim=96',
        'model.neck.embed_dim=96', 'model.decode_head.in_channels=[96,96,96,96]', 'model.decode_head.channels=32',
        'model.auxiliary_head.in_channels=96', 'model.auxiliary_head.channels=16']


def _losses(run_dir: Path) -> dict[int, dict[str, float]]:
    records = [json.loads(line) for line in (run_dir / 'vis_data/scalars.json').read_text().splitlines()]
    return {r['iter']: {k: v for k, v in r.items() if 'loss' in k} for r in records if 'loss' in r}


def test_resumed_finetune_gives_the_losses_of_the_uninterrupted_run(tmp_path, monkeypatch, capsys):
    assert make_demo_data.main(['--out', str(tmp_path / 'data/demo'), '--num-pretrain', '6', '--num-train', '4',
                                '--num-val', '2', '--workers', '1']) == 0
    monkeypatch.chdir(tmp_path)
    full, part = tmp_path / 'full', tmp_path / 'part'
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # multi-threaded CPU kernels are not bit-reproducible (1e-7 apart run to run)
    try:
        train_tool.main([SEG, '--work-dir', str(full), '--cfg-options', 'train_cfg.max_iters=4', *OPTS])
        assert '[train] seed 0 (default; set randomness.seed to change it)' in capsys.readouterr().out
        train_tool.main([SEG, '--work-dir', str(part), '--cfg-options', 'train_cfg.max_iters=2', *OPTS])
        train_tool.main([SEG, '--work-dir', str(part), '--resume', '--cfg-options', 'train_cfg.max_iters=4', *OPTS])
    finally:
        torch.set_num_threads(threads)

    (uninterrupted,), (first, resumed) = [sorted(p for p in d.iterdir() if p.is_dir()) for d in (full, part)]
    expected, got = _losses(uninterrupted), {**_losses(first), **_losses(resumed)}
    assert sorted(got) == [1, 2, 3, 4] and set(_losses(resumed)) == {3, 4}
    assert got == expected  # bit for bit, after the checkpoint too
    assert expected[3] != expected[4]  # the losses are not trivially equal
    log = next(resumed.glob('*.log')).read_text()
    assert 'restored the RNG states of the interrupted run' in log


def _dist_train(cwd: Path, *args: str) -> str:
    """tools/dist_train.sh with 2 processes: torchrun, gloo, DDP on CPU. Returns what it printed."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHON=sys.executable, MASTER_PORT=str(port), OMP_NUM_THREADS='1')  # the installed suite
    proc = subprocess.run(['bash', str(ROOT / 'tools/dist_train.sh'), SEG, '2', *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


# The config's own schedulers (LinearLR warmup from 0.01, then PolyLR power 1 to 0), compressed to a 6-iteration run:
# warmup over iterations 1-3, decay over 4-6. The types and factors are the config's; only begin / end are shortened.
SCHED_OPTS = [o for o in OPTS if o != 'param_scheduler=[]'] + [
    'param_scheduler.0.end=3', 'param_scheduler.1.begin=3', 'param_scheduler.1.end=6', 'train_cfg.max_iters=6']
# lr of iteration 1..6 (step t = 0..5) relative to the base lr. mmengine's LinearLR and PolyLR reach their end value
# at step end - 1 (they interpolate over end - begin - 1 steps): LinearLR 0.01 + 0.99 t / 2 for t = 0, 1, 2, then
# PolyLR (power 1, eta_min 0) 1 - (t - 3) / 2 for t = 3, 4, 5 -- as in the config, the last iteration runs at lr 0.
LR_FACTORS = [0.01, 0.505, 1.0, 1.0, 0.5, 0.0]


class _Killed(Exception):
    """What the test's kill raises (an exception, so the run dies mid-loop without the loop's normal end)."""


@HOOKS.register_module(force=True)
class KillAfterCheckpointTestHook(Hook):
    """Stops the run right after iteration ``iteration`` (1-based) has been checkpointed: like a kill -9 there, the
    loop never reaches the validation, the next iteration or the end of training."""

    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW): the checkpoint of this iteration is on disk

    def __init__(self, iteration: int):
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.iteration:
            raise _Killed(f'killed after iteration {self.iteration}')


def _scalars(run_dir: Path) -> dict[int, dict[str, float]]:
    records = [json.loads(line) for line in (run_dir / 'vis_data/scalars.json').read_text().splitlines()]
    return {r['iter']: {k: v for k, v in r.items() if 'loss' in k or k == 'lr'} for r in records if 'loss' in r}


class _OneThread:
    """multi-threaded CPU kernels are not bit-reproducible (1e-7 apart run to run)"""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


@pytest.fixture(scope='module')
def scheduled_run(tmp_path_factory) -> Path:
    """The demo data and the uninterrupted 6-iteration run with the schedulers on (shared by both kill points).
    Returns the workspace: data/demo and full/."""
    ws = tmp_path_factory.mktemp('sched')
    assert make_demo_data.main(['--out', str(ws / 'data/demo'), '--num-pretrain', '6', '--num-train', '4',
                                '--num-val', '2', '--workers', '1']) == 0
    cwd = os.getcwd()
    os.chdir(ws)  # the demo config reads data/demo from the working directory
    try:
        with _OneThread():
            train_tool.main([SEG, '--work-dir', str(ws / 'full'), '--cfg-options', *SCHED_OPTS])
    finally:
        os.chdir(cwd)
    return ws


@pytest.mark.parametrize('kill_at', [2, 4], ids=['killed in warmup', 'killed in decay'])
def test_resumed_finetune_with_the_lr_schedule_gives_the_losses_and_lrs_of_the_uninterrupted_run(
        scheduled_run, tmp_path, monkeypatch, kill_at):
    """Today's exact-resume test runs without schedulers (param_scheduler=[]); here the config's warmup + poly decay
    stay on. The run is killed right after a checkpoint (mid-warmup, or after the warmup has handed over to the
    decay), resumed with --resume and the SAME config, and must give the uninterrupted run's losses and lr at every
    iteration, and the same optimizer lr (every layer-decay group) and scheduler state at the end."""
    monkeypatch.chdir(scheduled_run)
    full, part = scheduled_run / 'full', tmp_path / 'part'
    real_seed_and_rng_state = train_tool.seed_and_rng_state

    def with_kill(cfg):  # tools/train.py's own hook set-up, plus the kill
        line = real_seed_and_rng_state(cfg)
        cfg.custom_hooks = [*cfg.custom_hooks, dict(type='KillAfterCheckpointTestHook', iteration=kill_at)]
        return line

    with _OneThread():
        with monkeypatch.context() as m, pytest.raises(_Killed):
            m.setattr(train_tool, 'seed_and_rng_state', with_kill)
            train_tool.main([SEG, '--work-dir', str(part), '--cfg-options', *SCHED_OPTS])
        assert (part / f'iter_{kill_at}.pth').is_file() and not (part / f'iter_{kill_at + 2}.pth').exists()
        train_tool.main([SEG, '--work-dir', str(part), '--resume', '--cfg-options', *SCHED_OPTS])

    (uninterrupted,), (first, resumed) = [sorted(p for p in d.iterdir() if p.is_dir()) for d in (full, part)]
    expected, got = _scalars(uninterrupted), {**_scalars(first), **_scalars(resumed)}
    assert sorted(_scalars(first)) == list(range(1, kill_at + 1))
    assert sorted(_scalars(resumed)) == list(range(kill_at + 1, 7))
    # The schedule is really on: the logged lr follows warmup then decay (checked against the factors, relative to
    # iteration 4 where the warmup has ended and the decay not yet begun).
    lrs = [expected[i]['lr'] for i in range(1, 7)]
    assert lrs == pytest.approx([f * lrs[3] for f in LR_FACTORS], rel=1e-6, abs=1e-12)
    for i in range(1, 7):
        assert got[i] == expected[i], (i, got[i], expected[i])  # bit for bit: losses and lr
    assert expected[5]['loss'] != expected[6]['loss']  # the losses are not trivially equal
    end_full, end_part = (safe_torch_load(d / 'iter_6.pth') for d in (full, part))
    assert [g['lr'] for g in end_part['optimizer']['param_groups']] == \
        [g['lr'] for g in end_full['optimizer']['param_groups']]
    assert len(end_full['optimizer']['param_groups']) > 1  # layer decay: one group per depth and decay kind
    assert end_part['param_schedulers'] == end_full['param_schedulers']
    log = next(resumed.glob('*.log')).read_text()
    assert 'restored the RNG states of the interrupted run' in log


def test_two_process_finetune_on_cpu_resumes_like_the_uninterrupted_run(tmp_path):
    """tools/dist_train.sh CONFIG 2 on a machine without CUDA (mmengine would call torch.cuda.set_device and give DDP a
    GPU index), interrupted at iteration 2 and resumed: the losses of the uninterrupted run. Each rank's RNG state is
    put back on that rank; the gradients of both ranks meet in every step, so a wrong state on either one shows."""
    assert make_demo_data.main(['--out', str(tmp_path / 'data/demo'), '--num-pretrain', '6', '--num-train', '8',
                                '--num-val', '2', '--workers', '1']) == 0
    full, part = tmp_path / 'full', tmp_path / 'part'
    out = _dist_train(tmp_path, '--work-dir', str(full), '--cfg-options', 'train_cfg.max_iters=4', *OPTS)
    assert 'no CUDA: DDP on CPU (device_ids=None)' in out
    _dist_train(tmp_path, '--work-dir', str(part), '--cfg-options', 'train_cfg.max_iters=2', *OPTS)
    _dist_train(tmp_path, '--work-dir', str(part), '--resume', '--cfg-options', 'train_cfg.max_iters=4', *OPTS)

    (uninterrupted,), (first, resumed) = [sorted(p for p in d.iterdir() if p.is_dir()) for d in (full, part)]
    expected, got = _losses(uninterrupted), {**_losses(first), **_losses(resumed)}
    assert sorted(got) == [1, 2, 3, 4] and set(_losses(resumed)) == {3, 4}
    assert got == expected
    assert expected[3] != expected[4]
    assert len(safe_torch_load(part / 'iter_4.pth')['rng_states']) == 2  # one state per process
    log = next(resumed.glob('*.log')).read_text()
    assert 'restored the RNG states of the interrupted run' in log
