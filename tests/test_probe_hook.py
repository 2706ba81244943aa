"""Probes during pretraining (pretrain/probe_hook.py) in tiny runs: schedule, resume without duplicate or missing
epochs, values in checkpoint meta and scalars.json; the target monitors in the log; tools/diagnose_targets.py on the
tiny checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_pretrain_run import losses, status, write_cfg  # (importing it registers the test hooks)

from sdae_suite.commands.diagnose_targets import main as diagnose_main
from sdae_suite.commands.pretrain import main as pretrain_main
from sdae_suite.engine.checkpoint_io import safe_torch_load


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> tuple[Path, Path]:
    """Class folders (2 classes x 8 images; also the pretraining data) and an ADE-format set (4 + 2 images), in the
    demo layout (<root>/pretrain/train/<class>, <root>/ade)."""
    root = tmp_path_factory.mktemp('hook_data')
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / 'pretrain' / 'train' / f'class{c}').mkdir(parents=True)
        for i in range(8):
            img = rng.integers(0, 100, (40 + i, 44, 3))
            img[..., c] += 150
            Image.fromarray(img.astype(np.uint8)).save(root / 'pretrain' / 'train' / f'class{c}' / f'{i}.png')
    for split, n in (('training', 4), ('validation', 2)):
        (root / 'ade' / 'images' / split).mkdir(parents=True)
        (root / 'ade' / 'annotations' / split).mkdir(parents=True)
        for i in range(n):
            lab = np.ones((36, 40), np.uint8)
            lab[6:20, 8 + i:30] = 2
            img = rng.integers(0, 60, (36, 40, 3)).astype(np.uint8)
            img[lab == 2] = 200
            Image.fromarray(img).save(root / 'ade' / 'images' / split / f'{i}.jpg')
            Image.fromarray(lab).save(root / 'ade' / 'annotations' / split / f'{i}.png')
    return root / 'pretrain' / 'train', root / 'ade'


def hooks(data: tuple[Path, Path] | None, interrupt: int | None = None) -> str:
    """data None: the hook finds its data itself (the training data_root, and the demo layout's ade next to it)."""
    where = f"cls_data='{data[0]}', seg_data='{data[1]}', " if data else ''
    probe = (f"dict(type='ProbeHook', interval=2, {where}max_train_per_class=5, max_test_per_class=3, "
             f"seg_max_train=4, seg_max_val=2, seg_epochs=3)")
    extra = [probe, "dict(type='RecordLossTestHook')"]
    if interrupt:
        extra.append(f"dict(type='InterruptAfterEpochTestHook', epoch={interrupt})")
    return '[' + ', '.join(extra) + ']'


def probe_lines(work_dir: Path) -> list[dict]:
    return [rec for log in sorted(work_dir.glob('*/vis_data/scalars.json'))
            for rec in map(json.loads, log.read_text().splitlines()) if 'probe/knn_top1' in rec]


@pytest.fixture(scope='module')
def runs(tmp_path_factory, data) -> tuple[Path, Path]:
    """The same 4-epoch SdAE run twice: uninterrupted (probe data found from the training data_root), and killed
    after epoch 2 then resumed (probe data given explicitly)."""
    tmp = tmp_path_factory.mktemp('probe_runs')
    cfg_a = write_cfg(tmp / 'tiny_a.py', data[0], epochs=4, extra_hooks=hooks(None))
    cfg = write_cfg(tmp / 'tiny.py', data[0], epochs=4, extra_hooks=hooks(data))
    assert pretrain_main([cfg_a, '--work-dir', str(tmp / 'a'), '--cfg-options', 'experiment_name=probe_a']) == 0
    cfg_kill = write_cfg(tmp / 'tiny_kill.py', data[0], epochs=4, extra_hooks=hooks(data, interrupt=2))
    assert pretrain_main([cfg_kill, '--work-dir', str(tmp / 'b'), '--cfg-options', 'experiment_name=probe_b1']) == 1
    assert pretrain_main([cfg, '--work-dir', str(tmp / 'b'), '--resume', '--cfg-options',
                          'experiment_name=probe_b2']) == 0
    return tmp / 'a', tmp / 'b'


def test_probe_hook_schedule_meta_and_scalars(runs):
    a, _ = runs
    hist = safe_torch_load(str(a / 'epoch_4.pth'))['meta']['probes']['history']
    assert [h['epoch'] for h in hist] == [2, 4]  # every 2 epochs, the last included
    for h in hist:
        assert 0 <= h['knn_top1'] <= 100 and 0 <= h['seg_mIoU'] <= 100 and h['time_s'] > 0
    assert [h['epoch'] for h in safe_torch_load(str(a / 'epoch_3.pth'))['meta']['probes']['history']] == [2]
    lines = probe_lines(a)
    assert [r['epoch'] for r in lines] == [2, 4]
    assert [r['probe/knn_top1'] for r in lines] == [h['knn_top1'] for h in hist]
    assert all(0 < r['probe/overhead_pct'] < 100 for r in lines)
    settings = safe_torch_load(str(a / 'epoch_4.pth'))['meta']['probes']['settings']
    assert settings['seg_data'].endswith('ade') and settings['cls_data'].endswith('train')  # found from data_root


def test_probe_hook_survives_resume_without_duplicates(runs):
    a, b = runs
    assert status(b)['status'] == 'finished'
    assert losses(b) == losses(a)  # the probes do not disturb the training's random stream: exact resume holds
    ha = safe_torch_load(str(a / 'epoch_4.pth'))['meta']['probes']['history']
    hb = safe_torch_load(str(b / 'epoch_4.pth'))['meta']['probes']['history']
    assert [h['epoch'] for h in hb] == [2, 4]  # epoch 2 (probed just before the kill) once, epoch 4 after resume
    strip = lambda hs: [{k: v for k, v in h.items() if k != 'time_s'} for h in hs]  # noqa: E731
    assert strip(hb) == strip(ha)  # same student weights at each epoch -> same probe values
    assert [r['epoch'] for r in probe_lines(b)] == [2, 4]  # across the two sessions' scalars.json


def test_probe_hook_probes_in_the_main_process_only(monkeypatch, data):
    """Under DDP only rank 0 probes (the others would compute the same numbers and only rank 0 writes checkpoints
    and logs): elsewhere the hook reads no data and touches neither the runner nor the model."""
    import sdae_suite.pretrain.probe_hook as probe_hook
    monkeypatch.setattr(probe_hook, 'is_main_process', lambda: False)
    hook = probe_hook.ProbeHook(interval=1, cls_data=str(data[0]), seg_data=str(data[1]))
    runner = object()  # any attribute the hook looked up would raise AttributeError
    hook.before_train(runner)
    hook.after_train_epoch(runner)
    hook.after_train(runner)
    assert hook.data is None and hook.history == [] and hook.probe_s == 0.0


def test_target_monitors_are_logged(runs):
    a, _ = runs
    recs = [json.loads(x) for log in a.glob('*/vis_data/scalars.json') for x in log.read_text().splitlines()]
    train = [r for r in recs if 'loss' in r]
    assert train and all('target_erank' in r and 'target_mean_cos' in r for r in train)
    assert all(1 <= r['target_erank'] <= 32 and -1 <= r['target_mean_cos'] <= 1 for r in train)  # embed_dim 32


def test_diagnose_targets_on_a_tiny_checkpoint(runs, data, tmp_path, capsys):
    a, _ = runs
    out = tmp_path / 'diag.json'
    assert diagnose_main([str(a / 'epoch_4.pth'), str(data[0]), '--out', str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res['baselines']) == {'position', 'position+colours'}
    for b in res['baselines'].values():
        assert 0.0 <= b['r2'] <= 1.0 and b['loss'] >= 0
    assert 0.0 <= res['student']['r2_linear_readout'] <= 1.0 and res['student']['loss'] >= 0
    assert res['images_fit'] == 8 and res['images_scored'] == 8
    printed = capsys.readouterr().out
    assert 'position+colours' in printed and 'verdict:' in printed
    bad = tmp_path / 'exported.pth'
    import torch
    torch.save({'state_dict': {}, 'meta': {'format': 'sdae-suite/backbone'}}, bad)
    assert diagnose_main([str(bad), str(data[0])]) == 2
    assert 'not a raw pretraining checkpoint' in capsys.readouterr().err
