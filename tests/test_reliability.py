"""Bad input at the entry points a user types: one clear message naming the file and the fix."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_pretrained_checkpoint_that_does_not_exist(tmp_path):
    missing = tmp_path / 'no_such_backbone.pth'
    proc = _run('tools/train.py', 'seg_configs/sdae_upernet_demo.py', '--pretrained', str(missing),
                '--work-dir', str(tmp_path / 'wd'))
    assert proc.returncode != 0
    assert f'checkpoint not found: {missing}' in proc.stderr + proc.stdout


def test_dataset_folder_that_does_not_exist(tmp_path):
    missing = tmp_path / 'no_ade_here'
    proc = _run('tools/train.py', 'seg_configs/sdae_upernet_demo.py', '--work-dir', str(tmp_path / 'wd'),
                '--cfg-options', f'train_dataloader.dataset.data_root={missing}')
    assert proc.returncode != 0
    out = proc.stderr + proc.stdout
    assert f'dataset folder not found: {missing}' in out and 'make data' in out and 'check_dataset.py' in out


def test_export_of_a_truncated_pretraining_checkpoint(tmp_path):
    import torch

    good = tmp_path / 'epoch_3.pth'
    torch.save({'state_dict': {'encoder.cls_token': torch.zeros(1, 1, 8)}, 'meta': {}}, good)
    trunc = tmp_path / 'epoch_4.pth'
    trunc.write_bytes(good.read_bytes()[:200])
    proc = _run('tools/export_backbone.py', str(trunc), str(tmp_path / 'out.pth'))
    assert proc.returncode != 0
    out = proc.stderr + proc.stdout
    assert 'epoch_4.pth' in out and 'truncated or corrupt' in out and 'earlier checkpoint' in out
    assert 'Traceback' not in out  # the message alone
    assert not (tmp_path / 'out.pth').exists()
