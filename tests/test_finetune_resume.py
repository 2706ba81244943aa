"""Fine-tuning is seeded by default and a resumed iteration-based run continues exactly like the uninterrupted one
(RNGStateHook in every tools/train.py run), even with a validation at the checkpoint's iteration."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from backbones.checkpoint_io import safe_torch_load
from tools import make_demo_data
from tools import train as train_tool

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
    env = dict(os.environ, PYTHON=sys.executable, MASTER_PORT=str(port), OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(['bash', str(ROOT / 'tools/dist_train.sh'), SEG, '2', *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


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
