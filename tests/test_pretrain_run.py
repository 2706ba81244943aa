"""Pretraining runs end to end (mmengine Runner, tiny config, CPU): exact resume, 2-process gloo, export round trip,
non-finite loss, corrupt image, bad configs."""
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
from PIL import Image

import sdae_suite.backbones  # noqa: F401
from sdae_suite.backbones.vit import VisionTransformer
from sdae_suite.commands.export_backbone import ExportError, export_backbone
from sdae_suite.commands.pretrain import main as pretrain_main
from sdae_suite.engine.checkpoint_io import safe_torch_load

ROOT = Path(__file__).resolve().parents[1]
TINY_CFG = """
_base_ = ['{root}/pretrain/configs/sdae_vit-tiny-p8_demo.py']
img_size = 32
model = dict(objective='{objective}',
             encoder=dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, drop_path_rate=0.1),
             decoder=dict(embed_dim=32, depth=1, num_heads=2))
train_dataloader = dict(batch_size=4, num_workers={workers}, dataset=dict(data_root='{data}', img_size=32))
warmup_epochs = 1
train_cfg = dict(max_epochs={epochs})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(max_keep_ckpts=5))
log_processor = dict(window_size=1)
custom_hooks = [
    dict(type='EMATeacherHook', momentum=0.9, end_momentum=1.0, by_epoch=False),
    dict(type='RNGStateHook'), dict(type='PretrainMetaHook'), dict(type='SkippedImagesHook'),
] + {extra_hooks}
"""


@HOOKS.register_module(force=True)
class RecordLossTestHook(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        with open(Path(runner.work_dir) / 'losses.jsonl', 'a') as f:
            f.write(json.dumps(outputs['loss'].item()) + '\n')


class _Interrupt(KeyboardInterrupt):
    """Stands in for Ctrl-C in the middle of a run."""


@HOOKS.register_module(force=True)
class InterruptAfterEpochTestHook(Hook):
    priority = 'LOWEST'  # after the checkpoint of that epoch is written, like a kill between epochs

    def __init__(self, epoch: int, poison: bool = False):
        self.epoch, self.poison = epoch, poison

    def after_train_epoch(self, runner):
        if runner.epoch + 1 != self.epoch:
            return
        if self.poison:  # the next iteration produces a NaN loss
            runner.model.encoder.patch_embed.proj.weight.data.fill_(float('nan'))
        else:
            raise _Interrupt()


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('images')
    g = torch.Generator().manual_seed(0)
    for i in range(16):  # ImageNet-style: root/<class>/<image>
        folder = root / f'class{i % 2}'
        folder.mkdir(exist_ok=True)
        pixels = torch.randint(0, 256, (40 + i, 44, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f'{i}.png')
    return root


def write_cfg(path: Path, data: Path, objective: str = 'sdae', epochs: int = 3, workers: int = 1,
              extra_hooks: str = "[dict(type='RecordLossTestHook')]") -> str:
    path.write_text(TINY_CFG.format(root=ROOT, objective=objective, workers=workers, data=data, epochs=epochs,
                                    extra_hooks=extra_hooks))
    return str(path)


def losses(work_dir: Path) -> list[float]:
    return [json.loads(line) for line in (work_dir / 'losses.jsonl').read_text().splitlines()]


def status(work_dir: Path) -> dict:
    return json.loads((work_dir / 'run_status.json').read_text())


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """The runs compared loss for loss, in this process and in fresh ones, all on one torch thread: two-thread CPU
    kernels are not bit-reproducible across processes (1e-7 apart, seen between this pytest process after the earlier
    test modules and a fresh subprocess). Module scope, so that it is in place before ``uninterrupted``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, data_root) -> Path:
    tmp = tmp_path_factory.mktemp('run_a')
    cfg = write_cfg(tmp / 'tiny.py', data_root)
    assert pretrain_main([cfg, '--work-dir', str(tmp / 'a'), '--cfg-options', 'experiment_name=run_a']) == 0
    return tmp / 'a'


def test_resume_after_interruption_reproduces_losses_exactly(tmp_path, data_root, uninterrupted):
    hooks = "[dict(type='RecordLossTestHook'), dict(type='InterruptAfterEpochTestHook', epoch=2)]"
    cfg_interrupt = write_cfg(tmp_path / 'tiny_interrupt.py', data_root, extra_hooks=hooks)
    cfg = write_cfg(tmp_path / 'tiny.py', data_root)
    wd = tmp_path / 'b'
    assert pretrain_main([cfg_interrupt, '--work-dir', str(wd), '--cfg-options', 'experiment_name=run_b1']) == 1
    st = status(wd)
    assert st['status'] == 'failed' and 'resume with --resume' in st['error'] and 'epoch_2.pth' in st['error']
    assert len(losses(wd)) == 8  # 2 epochs x 4 iterations
    assert pretrain_main([cfg, '--work-dir', str(wd), '--resume', '--cfg-options', 'experiment_name=run_b2']) == 0
    assert status(wd)['status'] == 'finished'

    expected = losses(uninterrupted)
    assert len(expected) == 12
    assert losses(wd) == expected  # bit-identical, iteration by iteration
    a, b = safe_torch_load(uninterrupted / 'epoch_3.pth'), safe_torch_load(wd / 'epoch_3.pth')
    assert a['state_dict'].keys() == b['state_dict'].keys()
    assert all(torch.equal(a['state_dict'][k], b['state_dict'][k]) for k in a['state_dict'])  # teacher included
    assert a['meta']['sdae']['epoch'] == 3 and a['meta']['sdae']['method'] == 'sdae'


def test_checkpoint_holds_teacher_and_optimizer_excludes_it(uninterrupted):
    ckpt = safe_torch_load(uninterrupted / 'epoch_3.pth')
    sd = ckpt['state_dict']
    assert any(k.startswith('teacher.blocks.') for k in sd) and any(k.startswith('decoder.blocks.') for k in sd)
    assert not any(k.startswith('teacher.') for g in ckpt['optimizer']['param_groups'] for k in [str(g)])
    n_opt = sum(len(g['params']) for g in ckpt['optimizer']['param_groups'])
    n_trainable = sum(1 for k in sd if not k.startswith('teacher.') and not k.endswith('pos_embed'))
    assert n_opt == n_trainable  # the optimizer holds exactly the student + decoder parameters


def test_export_round_trip(tmp_path, uninterrupted):
    ckpt = uninterrupted / 'epoch_3.pth'
    raw = safe_torch_load(ckpt)['state_dict']
    for branch, prefix in (('student', 'encoder.'), ('teacher', 'teacher.')):
        out = tmp_path / f'{branch}.pth'
        export_backbone(ckpt, out, branch)
        exported = safe_torch_load(out)
        meta = exported['meta']
        assert meta['format'] == 'sdae-suite/backbone' and meta['version'] == 1 and meta['branch'] == branch
        assert meta['method'] == 'sdae' and meta['epoch'] == 3 and meta['config'].endswith('tiny.py')
        assert meta['arch'] == dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0)
        assert meta['git_commit']
        vit = VisionTransformer(**meta['arch'])
        missing, unexpected = vit.load_state_dict(exported['state_dict'], strict=True)
        assert not missing and not unexpected
        for k, v in vit.state_dict().items():
            assert torch.equal(v, raw[prefix + k])
    with pytest.raises(ExportError, match='not a pretraining checkpoint'):
        export_backbone(tmp_path / 'student.pth', tmp_path / 'again.pth')


def test_two_process_gloo_run(tmp_path, data_root):
    cfg = write_cfg(tmp_path / 'tiny_mae.py', data_root, objective='mae', epochs=2, workers=0, extra_hooks='[]')
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHON=sys.executable, MASTER_PORT=str(port), OMP_NUM_THREADS='1')  # the installed suite
    wd = tmp_path / 'ddp'
    proc = subprocess.run(['bash', str(ROOT / 'tools/pretrain.sh'), cfg, '2', '--work-dir', str(wd)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'world size 2 | effective batch 8 (= 4 per process x 2 x 1 accumulation)' in proc.stdout
    assert 'lr 4.688e-05 (= blr 0.0015 x 8 / 256)' in proc.stdout
    assert status(wd)['status'] == 'finished'
    ckpt = safe_torch_load(wd / 'epoch_2.pth')
    assert len(ckpt['rng_states']) == 2 and ckpt['meta']['sdae']['method'] == 'mae'
    assert ckpt['meta']['iter'] == 4  # 16 images / (2 processes x 4) = 2 iterations per epoch
    assert not any(k.startswith('teacher.') for k in ckpt['state_dict'])
    with pytest.raises(ExportError, match='MAE has no teacher'):
        export_backbone(wd / 'epoch_2.pth', tmp_path / 'x.pth', 'teacher')


def test_non_finite_loss_stops_with_last_good_checkpoint_intact(tmp_path, data_root, capsys):
    hooks = "[dict(type='InterruptAfterEpochTestHook', epoch=1, poison=True)]"
    cfg = write_cfg(tmp_path / 'tiny_nan.py', data_root, workers=0, extra_hooks=hooks)
    wd = tmp_path / 'nan'
    assert pretrain_main([cfg, '--work-dir', str(wd), '--cfg-options', 'experiment_name=run_nan']) == 1
    st = status(wd)
    assert st['status'] == 'failed' and 'non-finite training loss' in st['error']
    assert f'Last good checkpoint: {wd / "epoch_1.pth"}' in st['error']
    assert 'non-finite training loss' in capsys.readouterr().err
    ckpt = safe_torch_load(wd / 'epoch_1.pth')
    assert all(torch.isfinite(v).all() for v in ckpt['state_dict'].values())
    assert not (wd / 'epoch_2.pth').exists()


def test_corrupt_image_in_worker_names_the_file(tmp_path, data_root, capsys):
    data = tmp_path / 'data'
    data.mkdir()
    for p in data_root.rglob('*.png'):
        (data / p.name).write_bytes(p.read_bytes())  # flat folder this time
    (data / '7.png').write_bytes(b'\x89PNG broken')
    cfg = write_cfg(tmp_path / 'tiny.py', data, epochs=2, workers=1, extra_hooks='[]')
    wd = tmp_path / 'corrupt'
    assert pretrain_main([cfg, '--work-dir', str(wd), '--cfg-options', 'experiment_name=run_corrupt']) == 1
    err = status(wd)['error']
    assert err.startswith(f'{data / "7.png"}: cannot read this image') and 'skip_corrupt=True' in err
    assert f'FAILED: {data / "7.png"}: cannot read' in capsys.readouterr().err

    wd = tmp_path / 'skip'
    assert pretrain_main([cfg, '--work-dir', str(wd), '--cfg-options', 'experiment_name=run_skip',
                          'train_dataloader.dataset.skip_corrupt=True']) == 0
    log = next(wd.glob('*/*.log')).read_text()
    assert 'skipped 1 unreadable image(s) in this batch (1 so far)' in log
    assert '(2 so far)' in log  # the broken file comes round once per epoch
    # the count lives in the checkpoint: a resumed, extended run goes on from 2
    assert pretrain_main([cfg, '--work-dir', str(wd), '--resume', '--cfg-options', 'experiment_name=run_skip2',
                          'train_dataloader.dataset.skip_corrupt=True', 'train_cfg.max_epochs=3']) == 0
    resumed_log = max(wd.glob('*/*.log'), key=lambda p: p.stat().st_mtime)
    assert 'skipped 1 unreadable image(s) in this batch (3 so far)' in resumed_log.read_text()


@pytest.mark.parametrize('option, message', [
    ('model.objective=simclr', "model.objective must be one of ('sdae', 'mae'), got 'simclr'"),
    ('model.decoder.dept=2', "unknown key 'dept' in model.decoder: did you mean 'depth'?"),
    ('train_dataloder.batch_size=2', "'train_dataloder' is not a key of"),
    ('train_dataloder.batch_size=2', "did you mean 'train_dataloader'?"),
    ('train_dataloader.dataset.skip_corupt=True', "did you mean 'skip_corrupt'?"),
])
def test_bad_config_gives_clear_error(tmp_path, data_root, capsys, option, message):
    cfg = write_cfg(tmp_path / 'tiny.py', data_root, extra_hooks='[]')
    assert pretrain_main([cfg, '--work-dir', str(tmp_path / 'w'), '--cfg-options', option]) == 2
    err = capsys.readouterr().err
    assert err.startswith('config error: ') and message in err
    assert not (tmp_path / 'w').exists()


KILLED_WHILE_WRITING = """
import os, signal, sys
sys.path[:0] = [{root!r} + '/tests']  # the test module that registers the test hooks
real_fsync = os.fsync


def fsync_then_die(fd):
    # The real atomic writer has written the whole new checkpoint to its temporary file; die before the rename.
    if '.epoch_2.pth.' in os.readlink(f'/proc/self/fd/{{fd}}'):
        os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(fd)


os.fsync = fsync_then_die
import test_pretrain_run  # noqa: F401  (registers the test hooks)
from sdae_suite.commands.pretrain import main
sys.exit(main({argv!r}))
"""


def test_kill_during_checkpoint_write_keeps_the_previous_one_and_resumes_exactly(tmp_path, data_root, uninterrupted):
    cfg = write_cfg(tmp_path / 'tiny.py', data_root)  # same settings as the uninterrupted run
    wd = tmp_path / 'killed'
    argv = [cfg, '--work-dir', str(wd), '--cfg-options', 'experiment_name=run_k1',
            'default_hooks.checkpoint.max_keep_ckpts=1']
    proc = subprocess.run([sys.executable, '-c', KILLED_WHILE_WRITING.format(root=str(ROOT), argv=argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == -9, proc.stderr[-3000:]
    # mmengine deleted epoch_1.pth before writing epoch_2.pth; now the old one stays until the new one is recorded.
    assert (wd / 'last_checkpoint').read_text().strip() == str(wd / 'epoch_1.pth')
    assert safe_torch_load(wd / 'epoch_1.pth')['meta']['epoch'] == 1
    assert not (wd / 'epoch_2.pth').exists() and len(list(wd.glob('.epoch_2.pth.*.tmp'))) == 1
    assert len(losses(wd)) == 8
    # A last_checkpoint left dangling (as the old rotation did) falls back to the newest complete checkpoint.
    (wd / 'last_checkpoint').write_text(str(wd / 'epoch_2.pth'))
    assert pretrain_main([cfg, '--work-dir', str(wd), '--resume', '--cfg-options', 'experiment_name=run_k2',
                          'default_hooks.checkpoint.max_keep_ckpts=1']) == 0
    log = max(wd.glob('*/*.log'), key=lambda p: p.stat().st_mtime).read_text()
    assert 'a temporary file left by a run killed while writing' in log
    assert f'named {wd / "epoch_2.pth"}, which does not exist; it now names the newest complete checkpoint' in log
    assert not list(wd.glob('.*.tmp'))
    expected = losses(uninterrupted)
    assert losses(wd) == expected[:8] + expected[4:]  # epochs 1-2, then epochs 2-3 again from epoch_1.pth
    assert sorted(p.name for p in wd.glob('*.pth')) == ['epoch_3.pth']


@HOOKS.register_module(force=True)
class InfGradTestHook(Hook):
    """Makes one parameter's gradient infinite on iteration ``iteration`` (1-based); the loss stays finite."""

    def __init__(self, iteration: int, poison_weights: bool = False):
        self.iteration, self.poison_weights = iteration, poison_weights

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.iteration and not self.poison_weights:
            runner.model.encoder.patch_embed.proj.weight.register_hook(lambda g: torch.full_like(g, float('inf')))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.iteration and self.poison_weights:  # what an applied inf step would leave
            runner.model.encoder.blocks[0].mlp.fc1.weight.data[0, 0] = float('nan')


@pytest.mark.parametrize('poison_weights', [False, True], ids=['inf gradient', 'nan weights'])
def test_non_finite_step_on_last_iteration_of_epoch_writes_no_bad_checkpoint(tmp_path, data_root, poison_weights):
    hooks = f"[dict(type='InfGradTestHook', iteration=8, poison_weights={poison_weights})]"  # 4 iterations per epoch
    cfg = write_cfg(tmp_path / 'tiny_inf.py', data_root, workers=0, extra_hooks=hooks)
    wd = tmp_path / 'inf'
    assert pretrain_main([cfg, '--work-dir', str(wd), '--cfg-options', 'experiment_name=run_inf']) == 1
    err = status(wd)['error']
    if poison_weights:
        assert 'refusing to write checkpoint epoch_2.pth' in err and 'encoder.blocks.0.mlp.fc1.weight' in err
    else:
        assert 'non-finite gradient in 1 parameter(s) (encoder.patch_embed.proj.weight)' in err
    assert f'Last good checkpoint: {wd / "epoch_1.pth"}' in err
    for ckpt in wd.glob('*.pth'):
        assert all(torch.isfinite(v).all() for v in safe_torch_load(ckpt)['state_dict'].values()), ckpt
    assert sorted(p.name for p in wd.glob('*.pth')) == ['epoch_1.pth']
    clean = write_cfg(tmp_path / 'tiny.py', data_root, workers=0)
    assert pretrain_main([clean, '--work-dir', str(wd), '--resume', str(wd / 'epoch_1.pth'),
                          '--cfg-options', 'experiment_name=run_inf2']) == 0
    assert status(wd)['status'] == 'finished'


def test_resume_from_a_malicious_checkpoint_is_refused_local_and_remote(tmp_path, data_root, monkeypatch):
    import functools
    import http.server
    import threading

    from test_checkpoint_security import _write_globals_gadget

    from sdae_suite.engine.checkpoint_io import UnsafeCheckpointError

    marker = tmp_path / 'pwned'
    www = tmp_path / 'www'
    www.mkdir()
    _write_globals_gadget(www / 'evil.pth', marker)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = write_cfg(tmp_path / 'tiny.py', data_root, workers=0, extra_hooks='[]')
    try:
        for source in (www / 'evil.pth', f'http://127.0.0.1:{server.server_address[1]}/evil.pth'):
            with pytest.raises(UnsafeCheckpointError, match=r'evil\.pth.*refused to unpickle'):
                pretrain_main([cfg, '--work-dir', str(tmp_path / 'w'), '--resume', str(source)])
            assert status(tmp_path / 'w')['status'] == 'failed'
            assert not marker.exists()
    finally:
        server.shutdown()
        server.server_close()


def test_fewer_images_than_a_batch_is_explained(tmp_path, data_root, capsys):
    # drop_last=True (official): 16 images with batch_size 32 give epochs without an iteration
    cfg = write_cfg(tmp_path / 'tiny.py', data_root, workers=0, extra_hooks='[]')
    wd = tmp_path / 'w'
    assert pretrain_main([cfg, '--work-dir', str(wd), '--cfg-options', 'train_dataloader.batch_size=32']) == 1
    assert 'fewer images per process than train_dataloader.batch_size' in status(wd)['error']
    assert 'train_dataloader.drop_last=False' in capsys.readouterr().err
