"""SIGTERM / SIGUSR1 at any iteration: the run finishes that iteration, writes a checkpoint, records 'preempted' and
exits with EXIT_PREEMPTED; --resume then gives the uninterrupted run's losses and weights bit for bit, in the middle of
an epoch (pretraining, ImageNet fine-tuning: ResumableEpochBasedTrainLoop) and of an iteration-based one (UperNet).
The signal also reaches the DataLoader workers, as Slurm sends it to every process of a job step."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from test_finetune_resume import OPTS as SEG_OPTS
from test_finetune_resume import SEG
from test_pretrain_run import data_root, losses, one_thread, status, uninterrupted, write_cfg  # noqa: F401

from sdae_suite.commands import make_demo_data
from sdae_suite.commands import train as train_tool
from sdae_suite.commands.pretrain import main as pretrain_main
from sdae_suite.contracts import EXIT_PREEMPTED
from sdae_suite.engine import preemption
from sdae_suite.engine.checkpoint_io import safe_torch_load

ROOT = Path(__file__).resolve().parents[1]


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (its DataLoader workers)."""
    kids = []
    for task in Path(f'/proc/{pid}/task').iterdir():
        kids += [int(c) for c in (task / 'children').read_text().split()]
    return kids


@HOOKS.register_module(force=True)
class SignalAtIterationTestHook(Hook):
    """Sends ``sig`` to this process and its DataLoader workers when iteration ``iteration`` (1-based) starts, the way
    Slurm signals every process of a job step: the iteration is then completed, checkpointed, and the run stops."""
    priority = 'HIGHEST'

    def __init__(self, iteration: int, sig: str = 'SIGTERM', workers: bool = True):
        self.iteration, self.sig, self.workers = iteration, signal.Signals[sig], workers

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.iteration:
            targets = [os.getpid()] + (children(os.getpid()) if self.workers else [])
            for pid in targets:
                os.kill(pid, self.sig)


# 3 epochs x 4 iterations: 5 instants drawn once (seeded), plus the last iteration of an epoch (a boundary case)
INSTANTS = sorted(random.Random(0).sample(range(1, 12), 5)) + [8]


@pytest.mark.parametrize('iteration', INSTANTS)
def test_pretraining_signal_then_resume_is_bit_exact(tmp_path, data_root, uninterrupted, iteration):
    hooks = f"[dict(type='RecordLossTestHook'), dict(type='SignalAtIterationTestHook', iteration={iteration})]"
    cfg_signal = write_cfg(tmp_path / 'tiny_signal.py', data_root, extra_hooks=hooks)
    cfg = write_cfg(tmp_path / 'tiny.py', data_root)
    wd = tmp_path / 'run'
    start = time.monotonic()
    assert pretrain_main([cfg_signal, '--work-dir', str(wd), '--cfg-options', 'experiment_name=p1']) == EXIT_PREEMPTED
    took = time.monotonic() - start
    st = status(wd)
    ckpt = wd / f'preempted_iter_{iteration}.pth'
    assert st['status'] == 'preempted' and st['iteration'] == iteration and st['checkpoint'] == str(ckpt)
    assert f'preempted by SIGTERM, checkpoint at iteration {iteration}' in st['error']
    assert (wd / 'last_checkpoint').read_text().strip() == str(ckpt)
    assert len(losses(wd)) == iteration  # the iteration under way when the signal came was completed, no more
    saved = safe_torch_load(ckpt)
    assert saved['meta']['iter'] == iteration and saved['meta']['epoch'] == (iteration - 1) // 4
    assert saved['preemption']['epoch_batches_done'] == (iteration - 1) % 4 + 1
    assert saved['optimizer']['state']  # a complete optimizer step, with its moments
    assert preemption.received() is None  # the handlers were put back and the record cleared
    assert took < 60

    assert pretrain_main([cfg, '--work-dir', str(wd), '--resume', '--cfg-options', 'experiment_name=p2']) == 0
    assert status(wd)['status'] == 'finished'
    assert losses(wd) == losses(uninterrupted)  # bit for bit, iteration by iteration
    a, b = safe_torch_load(uninterrupted / 'epoch_3.pth'), safe_torch_load(wd / 'epoch_3.pth')
    assert all(torch.equal(a['state_dict'][k], b['state_dict'][k]) for k in a['state_dict'])  # teacher included
    assert not list(wd.glob('preempted_iter_*.pth'))  # removed once a later checkpoint was recorded
    if iteration % 4:
        log = max(wd.glob('*/*.log'), key=lambda p: p.stat().st_mtime).read_text()
        assert f'drawing and skipping the {iteration % 4} batches already trained' in log


def test_sigusr1_from_one_rank_only_and_accumulation_waits_for_the_optimizer_step(tmp_path, data_root):
    """SIGUSR1 (Slurm's --signal=USR1@120) at iteration 2 of a run with 4-step gradient accumulation: the checkpoint
    is written after iteration 4, where the optimizer step is applied, not in the middle of the accumulation."""
    hooks = "[dict(type='RecordLossTestHook'), dict(type='SignalAtIterationTestHook', iteration=2, sig='SIGUSR1')]"
    cfg = write_cfg(tmp_path / 'tiny.py', data_root, extra_hooks=hooks, epochs=2)
    wd = tmp_path / 'accum'
    assert pretrain_main([cfg, '--work-dir', str(wd), '--cfg-options', 'experiment_name=acc',
                          'optim_wrapper.accumulative_counts=4']) == EXIT_PREEMPTED
    st = status(wd)
    assert st['iteration'] == 4 and 'preempted by SIGUSR1' in st['error']
    log = next(wd.glob('*/*.log')).read_text()
    assert 'waiting for the end of the gradient accumulation (4 iterations)' in log


def test_a_signal_between_runs_does_not_leak(tmp_path, data_root):
    """A run that was not signalled finishes normally after a preempted one in the same process."""
    cfg = write_cfg(tmp_path / 'tiny.py', data_root, epochs=2, extra_hooks='[]')
    assert pretrain_main([cfg, '--work-dir', str(tmp_path / 'w'), '--cfg-options', 'experiment_name=n']) == 0
    assert status(tmp_path / 'w')['status'] == 'finished'
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def _scalars(run_dir: Path) -> dict[int, dict[str, float]]:
    records = [json.loads(line) for line in (run_dir / 'vis_data/scalars.json').read_text().splitlines()]
    return {r['step']: {k: v for k, v in r.items() if 'loss' in k} for r in records if 'loss' in r}


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('demo')
    assert make_demo_data.main(['--out', str(root / 'data/demo'), '--num-pretrain', '24', '--num-train', '4',
                                '--num-val', '2', '--workers', '1']) == 0
    return root


def _train(argv: list[str], hooks: list[dict] | None = None, monkeypatch=None) -> int:
    """tools/train.py's main; its exit status (0 when it returns)."""
    real = train_tool.seed_and_rng_state

    def with_hooks(cfg):
        line = real(cfg)
        cfg.custom_hooks = [*cfg.custom_hooks, *(hooks or [])]
        return line

    monkeypatch.setattr(train_tool, 'seed_and_rng_state', with_hooks)
    try:
        train_tool.main(argv)
    except SystemExit as e:
        return e.code
    finally:
        monkeypatch.setattr(train_tool, 'seed_and_rng_state', real)
    return 0


CLS_FT = str(ROOT / 'cls_configs/sdae_vit-tiny-p8_1xb64-ft_demo.py')


@pytest.mark.parametrize('task', ['cls_ft', 'seg'])
def test_finetune_signal_then_resume_is_bit_exact(tmp_path, demo_data, monkeypatch, task):
    """ImageNet-protocol fine-tuning (epoch-based, preempted mid-epoch) and UperNet (iteration-based)."""
    monkeypatch.chdir(demo_data)
    if task == 'cls_ft':
        config, at, total = CLS_FT, 3, 8
        opts = ['train_cfg.max_epochs=2', 'train_cfg.val_interval=100', 'train_dataloader.batch_size=6',
                'train_dataloader.num_workers=1', 'train_dataloader.persistent_workers=False',
                'default_hooks.logger.interval=1', 'val_dataloader.num_workers=0',
                'val_dataloader.persistent_workers=False', 'model.backbone.depth=2']
    else:
        config, at, total = SEG, 3, 5
        opts = ['train_cfg.max_iters=5', *SEG_OPTS]  # checkpoints and validations at 2 and 4, the signal at 3
    full, part = tmp_path / 'full', tmp_path / 'part'
    signal_hook = [dict(type='SignalAtIterationTestHook', iteration=at)]
    assert _train([config, '--work-dir', str(full), '--cfg-options', *opts], monkeypatch=monkeypatch) == 0
    assert _train([config, '--work-dir', str(part), '--cfg-options', *opts], signal_hook, monkeypatch) \
        == EXIT_PREEMPTED
    st = json.loads((part / 'run_status.json').read_text())
    assert st['status'] == 'preempted' and st['iteration'] == at
    assert _train([config, '--work-dir', str(part), '--resume', '--cfg-options', *opts], monkeypatch=monkeypatch) == 0
    (uninterrupted,), (first, resumed) = [sorted(p for p in d.iterdir() if p.is_dir()) for d in (full, part)]
    expected, got = _scalars(uninterrupted), {**_scalars(first), **_scalars(resumed)}
    assert sorted(expected) == list(range(1, total + 1)) and sorted(_scalars(first)) == list(range(1, at + 1))
    assert got == expected  # bit for bit, across the signal
    last = 'epoch_2.pth' if task == 'cls_ft' else 'iter_5.pth'
    a, b = safe_torch_load(full / last)['state_dict'], safe_torch_load(part / last)['state_dict']
    assert all(torch.equal(a[k], b[k]) for k in a)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _pretrain_sh(cfg: str, wd: Path, *extra: str, signal_at: int | None = None) -> subprocess.CompletedProcess:
    """tools/pretrain.sh with 2 gloo processes, in a session of its own; ``signal_at``: once that many losses are
    logged, SIGTERM goes to every process of the session (torchrun, both ranks, their data workers), as Slurm does."""
    env = dict(os.environ, PYTHON=sys.executable, MASTER_PORT=str(_free_port()), OMP_NUM_THREADS='1',
               PYTHONPATH=f"{ROOT / 'tests'}:{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen(['bash', str(ROOT / 'tools/pretrain.sh'), cfg, '2', '--work-dir', str(wd), *extra],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    if signal_at is not None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (wd / 'losses_rank0.jsonl').is_file() and \
                    len((wd / 'losses_rank0.jsonl').read_text().splitlines()) >= signal_at:
                os.killpg(proc.pid, signal.SIGTERM)
                break
            time.sleep(0.05)
    out, _ = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out)


@HOOKS.register_module(force=True)
class RecordRankLossTestHook(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        from mmengine.dist import get_rank
        with open(Path(runner.work_dir) / f'losses_rank{get_rank()}.jsonl', 'a') as f:
            f.write(json.dumps([runner.iter + 1, outputs['loss'].item()]) + '\n')


def test_two_process_gloo_pretraining_sigterm_to_the_whole_job_then_resume_is_bit_exact(tmp_path, data_root):
    cfg = write_cfg(tmp_path / 'tiny.py', data_root, epochs=3, workers=1,
                    extra_hooks="[dict(type='RecordRankLossTestHook')]")
    # test_preemption registers the recording hook in the processes torchrun starts (custom_imports)
    Path(cfg).write_text(Path(cfg).read_text() + "\ncustom_imports = dict(imports=['sdae_suite.pretrain', "
                         "'sdae_suite.engine', 'sdae_suite.engine.safe_io_setup', 'test_preemption'], "
                         "allow_failed_imports=False)\n")
    full, part = tmp_path / 'full', tmp_path / 'part'
    proc = _pretrain_sh(cfg, full)
    assert proc.returncode == 0, proc.stdout[-3000:]
    at = random.Random(1).randrange(1, 5)  # 2 iterations per epoch per rank: the first 2 epochs
    proc = _pretrain_sh(cfg, part, signal_at=at)
    st = status(part)
    assert st['status'] == 'preempted', proc.stdout[-3000:]
    done = st['iteration']
    assert at <= done <= at + 1  # within one iteration of the signal
    assert (part / f'preempted_iter_{done}.pth').is_file()
    assert len(safe_torch_load(part / f'preempted_iter_{done}.pth')['rng_states']) == 2
    proc = _pretrain_sh(cfg, part, '--resume')
    assert proc.returncode == 0, proc.stdout[-3000:]
    for rank in (0, 1):
        expected = [json.loads(x) for x in (full / f'losses_rank{rank}.jsonl').read_text().splitlines()]
        got = [json.loads(x) for x in (part / f'losses_rank{rank}.jsonl').read_text().splitlines()]
        assert got == expected  # both ranks, every iteration, bit for bit
    a, b = safe_torch_load(full / 'epoch_3.pth'), safe_torch_load(part / 'epoch_3.pth')
    assert all(torch.equal(a['state_dict'][k], b['state_dict'][k]) for k in a['state_dict'])
