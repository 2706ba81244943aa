"""A full disk loses nothing and says so in one line: a checkpoint or report write that runs out of space leaves the
earlier files intact and no temporary file, and raises the atomic writer's WriteFailedError naming the file, the bytes
it needed and the bytes free; the entry points turn it into that line and a non-zero exit. At the start of training
the checkpoint hook estimates what the checkpoints will take and warns when the disk has less free."""
from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from PIL import Image
from torch import nn

from sdae_suite.commands import benchmark_report
from sdae_suite.engine.atomic import WriteFailedError, atomic_write_bytes, format_bytes, write_failure_exits
from sdae_suite.engine.checkpoint_io import safe_torch_load
from sdae_suite.engine.checkpoint_space import checkpoints_at_once, estimate_checkpoint_space
from sdae_suite.engine.hooks.checkpoint import is_complete_checkpoint

_Usage = namedtuple('_Usage', 'total used free')


class _FillingFile:
    """A file on a file system that fills up: the first ``room`` bytes really reach the disk, then ENOSPC."""

    def __init__(self, f, room: int, on_full) -> None:
        self._f, self._room, self._on_full = f, room, on_full

    def write(self, data) -> int:
        n = min(len(data), self._room)
        self._f.write(bytes(memoryview(data)[:n]))
        self._f.flush()
        self._room -= n
        if n < len(data):
            self._on_full()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return n

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


class DiskFull:
    """Makes the next write of one named file fail with ENOSPC after ``after`` bytes, at the lowest level the atomic
    writer uses (the file object ``os.fdopen`` returns): ``os.open`` is watched to know which file a descriptor is.
    Records the partial temporary file, which really held ``after`` bytes when the disk "filled"."""

    def __init__(self, monkeypatch) -> None:
        self.target: str | None = None
        self.after = 0
        self.partial: Path | None = None
        self.partial_size = -1
        real_open, real_fdopen = os.open, os.fdopen
        names: dict[int, str] = {}

        def watched_open(path, flags, mode=0o777, *, dir_fd=None):
            fd = real_open(path, flags, mode, dir_fd=dir_fd)
            names[fd] = os.fspath(path)
            return fd

        def filling_fdopen(fd, *args, **kwargs):
            f = real_fdopen(fd, *args, **kwargs)
            path = Path(names.pop(fd, '') or '.')
            if self.target is None or not path.name.startswith(f'.{self.target}.'):
                return f

            def full() -> None:
                self.partial, self.partial_size = path, path.stat().st_size
                self.target = None  # once: the next write has room again
            return _FillingFile(f, self.after, full)

        monkeypatch.setattr(os, 'open', watched_open)
        monkeypatch.setattr(os, 'fdopen', filling_fdopen)

    def fail(self, name: str, after: int) -> None:
        self.target, self.after = name, after


@pytest.fixture
def disk_full(monkeypatch) -> DiskFull:
    return DiskFull(monkeypatch)


def free_space(monkeypatch, free: int) -> None:
    """What ``shutil.disk_usage`` reports from now on (the writer and the estimate ask it)."""
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: _Usage(10 ** 12, 10 ** 12 - free, free))


def temporaries(folder: Path) -> list[Path]:
    return list(folder.rglob('.*.tmp'))


# ---------------------------------------------------------------- the writer

def test_failed_write_keeps_the_old_file_and_says_what_to_do(tmp_path, disk_full, monkeypatch):
    target = tmp_path / 'results.json'
    atomic_write_bytes(b'{"old": 1}\n', target)
    disk_full.fail('results.json', after=7)
    free_space(monkeypatch, 4321)
    with pytest.raises(WriteFailedError) as info:
        atomic_write_bytes(b'x' * 5000, target)
    e = info.value
    assert isinstance(e, OSError) and e.errno == errno.ENOSPC and e.filename == str(target) and e.needed == 5000
    assert target.read_bytes() == b'{"old": 1}\n'
    assert disk_full.partial_size == 7 and not disk_full.partial.exists() and not temporaries(tmp_path)
    assert str(e) == (f'could not write {target}: No space left on device; it needs 4.9 KiB (5,000 bytes), '
                      f'4.2 KiB (4,321 bytes) free on its file system; the previous file there (if any) is intact. '
                      f'Fix: free space on that file system, or point the work dir / output folder elsewhere '
                      f'(--work-dir, --out)')
    # Quota and I/O errors are the same type, with their own fix; a process pool gets the same exception back.
    quota = WriteFailedError(target, 10, 0, errno.EDQUOT, os.strerror(errno.EDQUOT))
    assert 'free space on your quota there' in str(quota)
    eio = WriteFailedError(target, 10, 5, errno.EIO, os.strerror(errno.EIO))
    assert 'dmesg for I/O errors' in str(eio) and 'free space on' not in str(eio)
    assert str(pickle.loads(pickle.dumps(e))) == str(e)


def test_entry_point_wrapper_prints_one_line_and_exits_non_zero(tmp_path, monkeypatch):
    free_space(monkeypatch, 1024)

    @write_failure_exits('tool: error:')
    def main() -> int:
        raise WriteFailedError(tmp_path / 'out.pth', 2048, 1024, errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == (f'tool: error: could not write {tmp_path / "out.pth"}: No space left on device; it '
                               f'needs 2.0 KiB (2,048 bytes), 1.0 KiB (1,024 bytes) free on its file system; the '
                               f'previous file there (if any) is intact. Fix: free space on that file system, or point '
                               f'the work dir / output folder elsewhere (--work-dir, --out)')

    @write_failure_exits('tool: error:')
    def library_write() -> int:  # a library's own write (mmengine's scalar log): named when the library names it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / 'scalars.json'))

    with pytest.raises(SystemExit, match=r'^tool: error: could not write .*scalars\.json: No space left on device; '
                                         r'1\.0 KiB \(1,024 bytes\) free on its file system\. Fix: free space'):
        library_write()

    @write_failure_exits('tool: error:')
    def other_error() -> int:
        raise PermissionError(errno.EACCES, 'Permission denied')

    with pytest.raises(PermissionError):  # not a write of ours and not a full disk: left as it is
        other_error()


# ---------------------------------------------------------------- checkpoints

class Toy(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, inputs, target, mode='loss'):
        return {'loss': ((self.fc(inputs).squeeze(-1) - target) ** 2).mean()}


class _Epochs(Hook):
    def __init__(self):
        self.started: list[int] = []

    def before_train_epoch(self, runner):
        self.started.append(runner.epoch)


def toy_runner(work_dir: Path, name: str, resume: bool = False) -> Runner:
    g = torch.Generator().manual_seed(0)
    data = [dict(inputs=torch.randn(4, generator=g), target=torch.randn((), generator=g)) for _ in range(8)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Toy()
    return Runner(
        model=model, work_dir=str(work_dir),
        train_dataloader=dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=True), batch_size=4,
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(type='FiniteGradOptimWrapper', optimizer=dict(type='AdamW', lr=1e-2)),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        default_hooks=dict(checkpoint=dict(type='CrashSafeCheckpointHook', interval=1, max_keep_ckpts=1),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume, randomness=dict(seed=0), experiment_name=name)


def test_disk_full_in_the_middle_of_a_checkpoint_loses_nothing(tmp_path, disk_full, monkeypatch):
    """2 epochs, one checkpoint each, max_keep_ckpts=1 (the first checkpoint is the one rotation would delete). The
    second checkpoint's write fails with ENOSPC after 1000 bytes, deep under Runner.save_checkpoint."""
    wd = tmp_path / 'run'
    ckpt1, ckpt2, record = wd / 'epoch_1.pth', wd / 'epoch_2.pth', wd / 'last_checkpoint'
    disk_full.fail('epoch_2.pth', after=1000)
    free_space(monkeypatch, 4321)
    with pytest.raises(WriteFailedError) as info:
        toy_runner(wd, 'full').train()
    e = info.value
    # The first checkpoint is complete, loads, and is still the one last_checkpoint names.
    assert is_complete_checkpoint(ckpt1) and record.read_text().strip() == str(ckpt1)
    first = safe_torch_load(ckpt1)
    assert first['meta']['epoch'] == 1 and {'state_dict', 'optimizer', 'message_hub'} <= set(first)
    # The partial file really held 1000 bytes; it is gone, and no epoch_2.pth appeared.
    assert disk_full.partial is not None and disk_full.partial.name.startswith('.epoch_2.pth.')
    assert disk_full.partial_size == 1000 and not temporaries(wd) and not ckpt2.exists()
    # One line: the file, what it needed (the checkpoint's real size: epoch 1's, within a few bytes), what is free.
    msg = str(e)
    assert '\n' not in msg and e.errno == errno.ENOSPC
    assert msg.startswith(f'could not write {ckpt2}: No space left on device; it needs ')
    assert abs(e.needed - ckpt1.stat().st_size) < 200 and f'({e.needed:,} bytes)' in msg
    assert '4.2 KiB (4,321 bytes) free on its file system' in msg and 'Fix: free space on that file system' in msg

    # Nothing lost: once there is room, --resume continues from epoch 1 and rotates as usual.
    monkeypatch.undo()
    resumed = toy_runner(wd, 'resumed', resume=True)
    epochs = _Epochs()
    resumed.register_hook(epochs)
    resumed.train()
    assert epochs.started == [1]
    assert is_complete_checkpoint(ckpt2) and record.read_text().strip() == str(ckpt2) and not ckpt1.exists()


# ---------------------------------------------------------------- the report

def test_disk_full_in_the_middle_of_the_report_keeps_the_previous_one(tmp_path, disk_full, monkeypatch):
    from test_report import DET, backbone_meta, coco_metrics, make_run

    runs = tmp_path / 'work_dirs'
    make_run(runs / 'sdae' / 'det', 'det', DET, ckpt='ckpts/sdae.pth', meta=backbone_meta('sdae'),
             metrics=coco_metrics(0.41, 0.37))
    make_run(runs / 'random' / 'det', 'det', DET, metrics=coco_metrics(0.30, 0.27))
    out = tmp_path / 'report'
    assert benchmark_report.main([str(runs), '--out', str(out), '--title', 'First report']) == 0
    old_html = (out / 'report.html').read_bytes()
    assert b'First report' in old_html

    disk_full.fail('report.html', after=100)
    free_space(monkeypatch, 9876)
    with pytest.raises(SystemExit) as info:
        benchmark_report.main([str(runs), '--out', str(out), '--title', 'Second report'])
    msg = info.value.code
    assert isinstance(msg, str) and '\n' not in msg  # sys.exit(str): that line on stderr, exit status 1
    needed = re.fullmatch(
        rf'benchmark_report: error: could not write {re.escape(str(out / "report.html"))}: No space left on device; '
        r'it needs [\d.]+ KiB \(([\d,]+) bytes\), 9\.6 KiB \(9,876 bytes\) free on its file system; the previous '
        r'file there \(if any\) is intact\. Fix: free space on that file system, or point the work dir / output '
        r'folder elsewhere \(--work-dir, --out\)', msg)
    assert needed and int(needed.group(1).replace(',', '')) > 100
    # The previous report.html is intact, the partial one gone; the files written before it are complete new ones.
    assert (out / 'report.html').read_bytes() == old_html
    assert disk_full.partial_size == 100 and not temporaries(out)
    assert json.loads((out / 'results.json').read_text())['rows']
    assert 'Second report' in (out / 'report.md').read_text()

    # A full disk while drawing the plots stops the report too (not a "plots could not be drawn" warning).
    old_curves = (out / 'plots' / 'curves_det.png').read_bytes()
    (out / 'plots' / 'bars_gone.png').write_bytes(b'a plot of an earlier report')
    disk_full.fail('curves_det.png', after=50)
    with pytest.raises(SystemExit, match=rf'^benchmark_report: error: could not write '
                                         rf'{re.escape(str(out / "plots" / "curves_det.png"))}: No space left'):
        benchmark_report.main([str(runs), '--out', str(out), '--title', 'Third report'])
    assert (out / 'plots' / 'curves_det.png').read_bytes() == old_curves and not temporaries(out)
    assert 'Third report' not in (out / 'report.md').read_text()
    assert (out / 'plots' / 'bars_gone.png').is_file()  # stale plots are removed only after the new ones are written
    assert benchmark_report.main([str(runs), '--out', str(out), '--title', 'Third report']) == 0
    assert not (out / 'plots' / 'bars_gone.png').exists() and 'Third report' in (out / 'report.md').read_text()


# ---------------------------------------------------------------- the estimate at the start of training

def test_estimate_of_a_known_tiny_model():
    model = nn.Linear(4, 1)  # 5 float32 parameters: 20 bytes
    adamw = torch.optim.AdamW(model.parameters())
    est = estimate_checkpoint_space(model, [adamw], count=2, iterations=10)
    assert (est.model_bytes, est.optimizer_bytes) == (20, 40)  # AdamW: exp_avg and exp_avg_sq per parameter
    # extras: 64 KiB fixed, 320 bytes per tensor record (2 model tensors, 2 x (2 slots + step)), 288 per iteration
    assert est.extra_bytes == 65536 + 320 * 8 + 288 * 10
    assert (est.per_checkpoint, est.total, est.upper) == (71036, 142072, False)
    assert est.optimizer_note == 'AdamW: 2 slots per trainable parameter'

    model.bias.requires_grad_(False)  # frozen (like the EMA teacher): saved with the model, no optimizer state
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert estimate_checkpoint_space(model, [sgd], 1, 0).optimizer_bytes == 16
    assert estimate_checkpoint_space(model, [torch.optim.SGD(model.parameters(), lr=0.1)], 1, 0).optimizer_bytes == 0
    assert estimate_checkpoint_space(model, [torch.optim.AdamW(model.parameters(), amsgrad=True)], 1,
                                     0).optimizer_bytes == 48
    unknown = estimate_checkpoint_space(model, [torch.optim.Adagrad(model.parameters())], 1, 0)
    assert unknown.upper and unknown.optimizer_bytes == 32 and 'upper estimate' in unknown.optimizer_note
    assert estimate_checkpoint_space(model, [], 1, 0).optimizer_note == 'saved without optimizer state'

    tied = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    tied[1].weight = tied[0].weight
    assert estimate_checkpoint_space(tied, [], 1, 0).model_bytes == 64  # one storage, saved once


def test_how_many_checkpoints_exist_at_once():
    # 2 epochs, max_keep_ckpts=1: the second is written before the first is deleted.
    assert checkpoints_at_once(0, 2, 1, 0, True, 1, 0)[0] == 2
    # max_keep_ckpts=-1: every checkpoint stays (3, 6, 9 and the last, 10), and the message says so.
    count, why = checkpoints_at_once(0, 10, 3, 0, True, -1, 0)
    assert count == 4 and why == 'all 4 this run saves (max_keep_ckpts=-1 keeps every one)'
    assert checkpoints_at_once(6, 10, 3, 0, True, -1, 0)[0] == 2  # resumed after 6: 9 and 10 are left
    assert checkpoints_at_once(0, 10, 3, 0, False, -1, 0)[0] == 3
    assert checkpoints_at_once(0, 10, 2, 5, False, -1, 0)[0] == 3  # save_begin=5: 5, 7, 9
    assert checkpoints_at_once(0, 100, 1, 0, True, 3, 1) == (
        5, 'max_keep_ckpts=3, plus the new one before the oldest is deleted + 1 best')


def test_pretraining_run_warns_when_its_checkpoints_will_not_fit(tmp_path, monkeypatch):
    """A real SdAE pretraining run (EMA teacher included): the estimate logged at the start matches the tensors of
    the checkpoint it then writes, and is not below the file's size; free space below it gives the warning."""
    from test_pretrain_run import write_cfg

    from sdae_suite.commands.pretrain import main as pretrain_main

    images = tmp_path / 'images'
    for i in range(8):
        (images / f'class{i % 2}').mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (36, 36), (i * 30, 60, 90)).save(images / f'class{i % 2}' / f'{i}.png')
    cfg = write_cfg(tmp_path / 'tiny.py', images, epochs=2, workers=0, extra_hooks='[]')
    free_space(monkeypatch, 50_000)
    wd = tmp_path / 'pt'
    assert pretrain_main([cfg, '--work-dir', str(wd), '--cfg-options', 'experiment_name=space']) == 0
    log = next(wd.rglob('*.log')).read_text()

    def logged_bytes(label: str) -> int:  # 'model 1.2 MiB (1,234,567 bytes)' or 'model 20 bytes'
        m = re.search(rf'{label} (?:[\d.]+ \w+ \()?([\d,]+) bytes', log)
        assert m, label
        return int(m.group(1).replace(',', ''))

    per, total = logged_bytes('about'), logged_bytes(r'\]:')
    ckpt = safe_torch_load(wd / 'epoch_1.pth')
    state = ckpt['state_dict']
    assert any(k.startswith('teacher.') for k in state)
    assert logged_bytes('model') == sum(v.numel() * v.element_size() for v in state.values())  # teacher included
    slots = [t for s in ckpt['optimizer']['state'].values() for k, t in s.items() if k in ('exp_avg', 'exp_avg_sq')]
    assert logged_bytes('optimizer') == sum(t.numel() * t.element_size() for t in slots)  # teacher excluded
    size = (wd / 'epoch_1.pth').stat().st_size
    assert size <= per <= size + 128 * 1024
    assert '[AdamW: 2 slots per trainable parameter]' in log
    assert total == 2 * per  # 2 epochs, max_keep_ckpts=5: both stay
    assert (f'{wd} has 48.8 KiB (50,000 bytes) free, less than the {format_bytes(total)} the '
            f'checkpoints of this run will take (2 x ') in log
    assert 'lower default_hooks.checkpoint.max_keep_ckpts, or point --work-dir to a file system with room' in log


def test_pretraining_command_with_a_full_disk_stops_with_one_line(tmp_path, disk_full, monkeypatch, capsys):
    """tools/pretrain.py: the second epoch's checkpoint hits ENOSPC; exit status 1, one line on stderr and in
    run_status.json, epoch_1.pth intact and named by last_checkpoint; --resume then finishes the run."""
    from test_pretrain_run import write_cfg

    from sdae_suite.commands.pretrain import main as pretrain_main

    images = tmp_path / 'images'
    for i in range(8):
        (images / f'class{i % 2}').mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (36, 36), (i * 30, 60, 90)).save(images / f'class{i % 2}' / f'{i}.png')
    cfg = write_cfg(tmp_path / 'tiny.py', images, epochs=2, workers=0, extra_hooks='[]')
    wd = tmp_path / 'pt'
    disk_full.fail('epoch_2.pth', after=5000)
    assert pretrain_main([cfg, '--work-dir', str(wd), '--cfg-options', 'experiment_name=full']) == 1
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if 'FAILED' in x)
    assert line.startswith(f'[pretrain] FAILED: could not write {wd / "epoch_2.pth"}: No space left on device; it '
                           f'needs ') and 'free on its file system' in line
    status = json.loads((wd / 'run_status.json').read_text())
    assert status['status'] == 'failed' and status['error'] == line.removeprefix('[pretrain] FAILED: ')
    assert (wd / 'last_checkpoint').read_text().strip() == str(wd / 'epoch_1.pth')
    assert is_complete_checkpoint(wd / 'epoch_1.pth') and not temporaries(wd)
    monkeypatch.undo()
    assert pretrain_main([cfg, '--work-dir', str(wd), '--resume', '--cfg-options', 'experiment_name=room']) == 0
    assert is_complete_checkpoint(wd / 'epoch_2.pth')


def test_disk_full_while_copying_the_report_pictures_keeps_the_previous_ones(tmp_path, disk_full):
    from sdae_suite.report.visuals import copy_visuals

    src = tmp_path / 'src' / 'run'
    src.mkdir(parents=True)
    (src / 'a.png').write_bytes(b'old picture a' * 100)
    (src / 'stale.png').write_bytes(b'stale')
    out = tmp_path / 'report'

    def sections(*names):
        return [{'figures': [{'path': src / n} for n in names]}]

    copy_visuals(sections('a.png', 'stale.png'), out)
    old = (out / 'visuals/0_run/a.png').read_bytes()
    (src / 'a.png').write_bytes(b'new picture a' * 100)
    disk_full.fail('a.png', after=50)
    with pytest.raises(WriteFailedError, match='could not write .*a.png: No space left on device'):
        copy_visuals(sections('a.png'), out)
    assert (out / 'visuals/0_run/a.png').read_bytes() == old and (out / 'visuals/0_run/stale.png').is_file()
    assert not temporaries(out / 'visuals/0_run')
    copy_visuals(sections('a.png'), out)  # room again: the new picture, and the stale one removed only now
    assert (out / 'visuals/0_run/a.png').read_bytes() == (src / 'a.png').read_bytes()
    assert not (out / 'visuals/0_run/stale.png').exists()
