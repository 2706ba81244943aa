"""The stack's compiled ops, the checkpoint allow-list and atomic saving."""
from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook
from torch import nn

import sdae_suite.backbones  # noqa: F401  (installs safe loading / atomic saving)
from sdae_suite.engine.atomic import atomic_torch_save
from sdae_suite.engine.checkpoint_io import UnsafeCheckpointError, safe_torch_load

ROOT = Path(__file__).resolve().parents[1]


def test_nms_keeps_hand_computed_indices():
    from mmcv.ops import nms

    # IoU(0,1) = 81/119 = 0.68 > 0.5 -> 1 suppressed; IoU(0,2) = 0; IoU(2,3) = 50/150 = 0.33 < 0.5 -> 3 kept;
    # box 4 is identical to 2 -> suppressed. Kept in score order: 0 (0.9), 2 (0.8), 3 (0.6).
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [25, 20, 35, 30], [20, 20, 30, 30]],
                         dtype=torch.float32)
    scores = torch.tensor([0.9, 0.7, 0.8, 0.6, 0.5])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2, 3]
    assert torch.allclose(dets[:, 4], torch.tensor([0.9, 0.8, 0.6]))


def test_roi_align_on_constant_map_returns_constant():
    from mmcv.ops import RoIAlign

    feats = torch.full((2, 3, 16, 16), 2.5)
    rois = torch.tensor([[0, 1.0, 1.0, 9.0, 7.0], [1, 0.5, 3.0, 14.0, 15.0]])
    out = RoIAlign((7, 7), spatial_scale=1.0, sampling_ratio=2, aligned=True)(feats, rois)
    assert out.shape == (2, 3, 7, 7)
    assert torch.allclose(out, torch.full_like(out, 2.5))


def _runner(work_dir: Path, max_iters: int, resume: bool = False, name: str = 'toy'):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 1)

        def forward(self, inputs, target, mode='loss'):
            pred = self.fc(inputs).squeeze(-1)  # default_collate stacked the batch
            return {"loss": ((pred - target) ** 2).mean()}

    g = torch.Generator().manual_seed(0)
    data = [dict(inputs=torch.randn(4, generator=g), target=torch.randn((), generator=g)) for _ in range(16)]
    with torch.random.fork_rng(devices=[]):  # the model is built before the Runner seeds: same init in every run
        torch.manual_seed(0)
        model = Toy()
    return Runner(
        model=model, work_dir=str(work_dir),
        train_dataloader=dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=True), batch_size=4,
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(type='FiniteGradOptimWrapper', optimizer=dict(type='AdamW', lr=1e-2)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=4)],
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CrashSafeCheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume, randomness=dict(seed=0), experiment_name=name)


def test_runner_checkpoint_loads_with_weights_only_and_resumes(tmp_path):
    runner = _runner(tmp_path, max_iters=4)
    runner.train()
    ckpt = tmp_path / 'iter_4.pth'
    assert ckpt.is_file() and (tmp_path / 'last_checkpoint').read_text().strip().endswith('iter_4.pth')
    # The raw file holds the resume state, including mmengine's non-tensor objects, which the gate reads with
    # weights_only=True and its own allow-list (torch's global allow-list is left as it was)...
    obj = safe_torch_load(ckpt)
    assert {'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'} <= set(obj)
    assert type(obj['message_hub']['log_scalars']['train/loss']).__name__ == 'HistoryBuffer'
    # ...and mmengine's own resume path goes through the safe loader.
    resumed = _runner(tmp_path, max_iters=6, resume=True)
    resumed.train()
    assert resumed.iter == 6
    assert (tmp_path / 'iter_6.pth').is_file()


class _IterLog(Hook):
    """Records the iterations a run trains (runner.iter before each step: 0-based)."""

    def __init__(self):
        self.iters: list[int] = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.iters.append(runner.iter)


def _weights(runner) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_last_checkpoint_naming_a_truncated_file_falls_back_to_the_newest_complete_one(tmp_path):
    """CrashSafeCheckpointHook._repair through a real Runner: ``last_checkpoint`` names iter_6.pth, cut in half (a
    write that never finished); iter_2.pth and iter_4.pth are complete. The resumed run starts from iter_4.pth, the
    newest complete checkpoint, says so in its log, and ends with the weights of the uninterrupted run."""
    from sdae_suite.engine.hooks.checkpoint import is_complete_checkpoint

    full = _runner(tmp_path / 'full', max_iters=8, name='fallback_full')
    full.train()
    wd = tmp_path / 'run'
    _runner(wd, max_iters=6, name='fallback_first').train()
    ckpt4, ckpt6, record = wd / 'iter_4.pth', wd / 'iter_6.pth', wd / 'last_checkpoint'
    assert record.read_text().strip() == str(ckpt6)
    assert is_complete_checkpoint(wd / 'iter_2.pth') and is_complete_checkpoint(ckpt4)
    blob = ckpt6.read_bytes()
    ckpt6.write_bytes(blob[:len(blob) // 2])
    assert not is_complete_checkpoint(ckpt6)

    resumed = _runner(wd, max_iters=8, resume=True, name='fallback_resumed')
    seen = _IterLog()
    resumed.register_hook(seen)
    resumed.train()
    assert seen.iters == [4, 5, 6, 7]  # from iter_4.pth: not the broken iter_6.pth, not iter_2.pth, not from scratch
    log = next(Path(resumed.log_dir).glob('*.log')).read_text()
    assert (f'{record} named {ckpt6}, which is incomplete; it now names the newest complete checkpoint, {ckpt4}'
            in log)
    expected, got = _weights(full), _weights(resumed)
    assert expected.keys() == got.keys()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=1e-6)
    assert is_complete_checkpoint(ckpt6)  # rewritten by the resumed run
    assert record.read_text().strip() == str(wd / 'iter_8.pth')


def test_last_checkpoint_with_no_complete_checkpoint_left_starts_from_scratch(tmp_path):
    wd = tmp_path / 'run'
    _runner(wd, max_iters=4, name='noneleft_first').train()
    for ckpt in (wd / 'iter_2.pth', wd / 'iter_4.pth'):
        blob = ckpt.read_bytes()
        ckpt.write_bytes(blob[:len(blob) // 3])
    resumed = _runner(wd, max_iters=2, resume=True, name='noneleft_resumed')
    seen = _IterLog()
    resumed.register_hook(seen)
    resumed.train()
    assert seen.iters == [0, 1]
    log = next(Path(resumed.log_dir).glob('*.log')).read_text()
    assert f'named {wd / "iter_4.pth"}, which is incomplete, and {wd} holds no complete checkpoint' in log
    assert (wd / 'last_checkpoint').read_text().strip() == str(wd / 'iter_2.pth')


class _Pwn:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.system, (f'touch {self.target}',))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / 'pwned'
    bad = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'payload': _Pwn(str(marker))}, bad)
    with pytest.raises(UnsafeCheckpointError, match=r'evil\.pth.*refused.*allow-list.*posix\.system'):
        safe_torch_load(bad)
    from mmengine.runner import CheckpointLoader

    with pytest.raises(UnsafeCheckpointError, match='evil.pth'):
        CheckpointLoader.load_checkpoint(str(bad), map_location='cpu')
    assert not marker.exists()


def test_plain_pickle_file_is_refused(tmp_path):
    bad = tmp_path / 'plain.pkl'
    marker = tmp_path / 'pwned'
    bad.write_bytes(pickle.dumps(_Pwn(str(marker))))
    with pytest.raises(Exception, match='plain.pkl'):
        safe_torch_load(bad)
    assert not marker.exists()


def test_official_mae_style_checkpoint_with_args_namespace_loads(tmp_path):
    import argparse

    path = tmp_path / 'checkpoint-299.pth'
    args = argparse.Namespace(model='mae_vit_base_patch16', mask_ratio=0.75, blr=1.5e-4, norm_pix_loss=True)
    torch.save({'model': {'cls_token': torch.zeros(1, 1, 8)}, 'epoch': 299, 'args': args}, path)
    obj = safe_torch_load(path)
    assert obj['args'].mask_ratio == 0.75 and obj['epoch'] == 299


def test_truncated_and_missing_checkpoints_name_the_file(tmp_path):
    good = tmp_path / 'good.pth'
    atomic_torch_save({'w': torch.arange(1000.0)}, good)
    trunc = tmp_path / 'trunc.pth'
    trunc.write_bytes(good.read_bytes()[:300])
    with pytest.raises(RuntimeError, match=r'trunc\.pth.*truncated or corrupt'):
        safe_torch_load(trunc)
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        safe_torch_load(tmp_path / 'nope.pth')


def test_atomic_save_leaves_old_file_when_killed_mid_write(tmp_path):
    target = tmp_path / 'ckpt.pth'
    atomic_torch_save({'v': torch.zeros(3)}, target)
    # A child process starts a large atomic save and is killed while writing.
    script = (
        'import os, signal, torch, sdae_suite.engine.atomic as c\n'
        'def die(fd): os.kill(os.getpid(), signal.SIGKILL)\n'
        'c.os.fsync = die\n'
        f'c.atomic_torch_save({{"v": torch.ones(3)}}, {str(target)!r})\n')
    proc = subprocess.run([sys.executable, '-c', script], cwd=ROOT)
    assert proc.returncode == -9
    assert torch.equal(safe_torch_load(target)['v'], torch.zeros(3))
    # What the killed writer left is a hidden temporary file, never something that looks like a checkpoint.
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['ckpt.pth']


def test_the_crash_safe_hook_saves_through_the_atomic_backend(tmp_path):
    """Our checkpoint hook writes every checkpoint through the atomic backend; mmengine's own 'local' backend is left
    as it is (tests/test_pretrain_run.py kills a run inside that atomic write and resumes from the previous file)."""
    from mmengine.fileio import LocalBackend, get_file_backend
    from mmengine.runner.checkpoint import save_checkpoint

    from sdae_suite.engine.checkpoint_io import AtomicLocalBackend
    from sdae_suite.engine.hooks import CrashSafeCheckpointHook

    hook = CrashSafeCheckpointHook(interval=1)
    assert isinstance(get_file_backend(str(tmp_path / 'x.pth'), backend_args=hook.backend_args), AtomicLocalBackend)
    assert type(get_file_backend(str(tmp_path / 'x.pth'))) is LocalBackend
    assert CrashSafeCheckpointHook(interval=1, out_dir='s3://bucket/run').backend_args is None  # remote: its own
    save_checkpoint(copy.deepcopy({'w': torch.ones(2)}), str(tmp_path / 'x.pth'), backend_args=hook.backend_args)
    assert torch.equal(safe_torch_load(tmp_path / 'x.pth')['w'], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ['x.pth']  # no temporary file left behind


class _BestRunner:
    """What CheckpointHook._save_best_checkpoint touches of a runner; records the files present at each write."""

    def __init__(self, work_dir: Path):
        from mmengine.logging import MessageHub, MMLogger

        self.work_dir, self.epoch, self.iter = str(work_dir), 0, 0
        self.message_hub = MessageHub(f'best-{work_dir.name}')
        self.logger = MMLogger.get_instance(f'best-{work_dir.name}')
        self.present_at_write: dict[str, list[str]] = {}

    def save_checkpoint(self, out_dir, filename, **kwargs):
        self.present_at_write[filename] = sorted(p.name for p in Path(out_dir).glob('*.pth'))
        atomic_torch_save({'iter': self.iter}, Path(out_dir) / filename)


@pytest.mark.parametrize('save_best, rule', [('acc', 'greater'), (['acc', 'loss'], ['greater', 'less'])])
def test_save_best_writes_the_new_best_before_deleting_the_old_one(tmp_path, save_best, rule):
    from mmengine.fileio import get_file_backend

    from sdae_suite.engine.hooks.checkpoint import CrashSafeCheckpointHook

    hook = CrashSafeCheckpointHook(interval=1, by_epoch=False, save_best=save_best, rule=rule)
    hook.out_dir, hook.file_backend = str(tmp_path), get_file_backend(str(tmp_path))
    runner = _BestRunner(tmp_path)
    for it, acc, loss in ((2, 0.5, 1.0), (4, 0.4, 0.8), (6, 0.7, 0.9)):
        runner.iter = it
        hook._save_best_checkpoint(runner, {'acc': acc, 'loss': loss})
    files = sorted(p.name for p in tmp_path.glob('*.pth'))
    # The previous best was still on disk when the new best was written (mmengine deletes it first).
    assert runner.present_at_write['best_acc_iter_6.pth'] == (
        ['best_acc_iter_2.pth'] if save_best == 'acc' else ['best_acc_iter_2.pth', 'best_loss_iter_4.pth'])
    if save_best == 'acc':
        assert files == ['best_acc_iter_6.pth']  # iteration 4 did not improve: nothing written, nothing deleted
        assert hook.best_ckpt_path == str(tmp_path / 'best_acc_iter_6.pth')
        assert runner.message_hub.get_info('best_score') == 0.7
    else:
        # loss improved at iteration 4 only, acc at 2 and 6: each key keeps its own newest best.
        assert files == ['best_acc_iter_6.pth', 'best_loss_iter_4.pth']
        assert hook.best_ckpt_path_dict == {'acc': str(tmp_path / 'best_acc_iter_6.pth'),
                                            'loss': str(tmp_path / 'best_loss_iter_4.pth')}
        assert runner.present_at_write['best_loss_iter_4.pth'] == ['best_acc_iter_2.pth', 'best_loss_iter_2.pth']
