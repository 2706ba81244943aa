"""The loading gate against real exploits: the getattr gadgets, every loading path, every remote scheme.

Each exploit is first shown to RUN under a naive allow-list (plain ``builtins.getattr``, in a fresh interpreter), so
that the refusals below are refusals of working attacks, not of strawmen.
"""
from __future__ import annotations

import functools
import http.server
import os
import pickletools
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import sdae_suite.backbones  # noqa: F401
import sdae_suite.commands  # noqa: F401  (what every entry point does: routes mmengine's schemes through the gate)
from sdae_suite.engine import atomic, checkpoint_io
from sdae_suite.engine.atomic import atomic_torch_save
from sdae_suite.engine.checkpoint_io import UnsafeCheckpointError, safe_torch_load

ROOT = Path(__file__).resolve().parents[1]


class _Attr:
    """Pickles as ``getattr(obj, name)``: the lookup an allow-listed getattr performs for the attacker."""

    def __init__(self, obj, name: str):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return getattr, (self.obj, self.name)


def _builtins_eval() -> _Attr:
    # builtins.getattr.__self__ is the builtins module; its eval is one more lookup away.
    return _Attr(_Attr(getattr, '__self__'), 'eval')


class _EvalThroughTensorRebuild:
    """torch's allow-listed ``_rebuild_from_type_v2(func, type, args, state)`` calls ``func(*args)``: hand it eval."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return torch._tensor._rebuild_from_type_v2, (_builtins_eval(), torch.Tensor, (self.code,), {})


class _ModuleGlobals:
    """Pickles as ``getattr(torch._utils._rebuild_tensor_v2, '__globals__')`` (torch._utils' module dict), followed
    by SETITEMs of ``items`` into it."""

    def __init__(self, items: dict):
        self.items = items

    def __reduce__(self):
        return getattr, (torch._utils._rebuild_tensor_v2, '__globals__'), None, None, iter(self.items.items())


class _TriggerRebuildParameter:
    """Calls the allow-listed ``torch._utils._rebuild_parameter(data, ...)``, whose body runs
    ``torch.nn.Parameter(data, requires_grad)`` -- with ``torch`` looked up in the (now overwritten) module globals."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return torch._utils._rebuild_parameter, (self.code, None, {})


def _payload(marker: Path) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).touch() or __import__('torch').zeros(1)"


def _write_eval_gadget(path: Path, marker: Path) -> Path:
    torch.save({'state_dict': {'w': torch.ones(1)}, 'x': _EvalThroughTensorRebuild(_payload(marker))}, path)
    return path


def _write_globals_gadget(path: Path, marker: Path) -> Path:
    """getattr walks to torch._utils' globals; SETITEM replaces its ``torch`` with argparse.Namespace objects (an
    allow-listed data type) whose ``nn.Parameter`` is eval; torch's own rebuild code then calls it."""
    import argparse

    fake_torch = argparse.Namespace(nn=argparse.Namespace(Parameter=_builtins_eval()))
    torch.save({'state_dict': {'w': torch.ones(1)}, 'hijack': _ModuleGlobals({'torch': fake_torch}),
                'trigger': _TriggerRebuildParameter(_payload(marker))}, path)
    return path


GADGETS = {'eval via getattr chain': _write_eval_gadget, 'SETITEM on module globals': _write_globals_gadget}


@pytest.mark.parametrize('gadget', GADGETS)
def test_gadget_runs_under_a_naive_getattr_allow_list(tmp_path, gadget):
    """The exploit is real: with getattr allow-listed (the old allow-list), weights_only loading runs the payload."""
    marker = tmp_path / 'pwned'
    path = GADGETS[gadget](tmp_path / 'evil.pth', marker)
    assert b'getattr' in path.read_bytes()
    script = ('import argparse, builtins, torch\n'  # the old allow-list's generic entries
              'torch.serialization.add_safe_globals([builtins.getattr, argparse.Namespace])\n'
              f'try:\n    torch.load({str(path)!r}, weights_only=True)\nexcept Exception:\n    pass\n')
    subprocess.run([sys.executable, '-c', script], check=True, cwd=tmp_path, timeout=120)
    assert marker.exists()


def _load_paths(path: Path) -> Iterator[tuple[str, object]]:
    from mmengine.runner import CheckpointLoader, load_checkpoint
    from mmengine.runner.checkpoint import _load_checkpoint

    from sdae_suite.backbones.pretrained import load_pretrained
    from sdae_suite.backbones.vit import VisionTransformer
    from sdae_suite.commands.export_backbone import export_backbone

    yield 'safe_torch_load', lambda: safe_torch_load(path)
    yield 'CheckpointLoader', lambda: CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    yield 'mmengine _load_checkpoint', lambda: _load_checkpoint(str(path), map_location='cpu')
    yield 'mmengine load_checkpoint', lambda: load_checkpoint(nn.Linear(1, 1), str(path), map_location='cpu')
    yield 'load_pretrained', lambda: load_pretrained(VisionTransformer(img_size=16, patch_size=8, embed_dim=8,
                                                                         depth=1, num_heads=1), path, 'student')
    yield 'export_backbone', lambda: export_backbone(path, path.with_name('out.pth'), 'student')


@pytest.mark.parametrize('gadget', GADGETS)
def test_gadgets_are_refused_on_every_local_path(tmp_path, gadget):
    marker = tmp_path / 'pwned'
    path = GADGETS[gadget](tmp_path / 'evil.pth', marker)
    for name, load in _load_paths(path):
        with pytest.raises(Exception, match=r'evil\.pth.*refused to unpickle') as err:
            load()
        assert 'getattr' in str(err.value), name
        assert not marker.exists(), name


def test_getattr_resolves_history_buffer_statistics_only(tmp_path):
    from mmengine.logging.history_buffer import HistoryBuffer

    ok = tmp_path / 'ok.pth'
    torch.save({'m': _Attr(HistoryBuffer, 'mean')}, ok)
    assert safe_torch_load(ok)['m'] is HistoryBuffer.mean
    for name in ('__init__', '__dict__', 'update', '__class__'):
        bad = tmp_path / f'bad_{name}.pth'
        torch.save({'m': _Attr(HistoryBuffer, name)}, bad)
        with pytest.raises(UnsafeCheckpointError, match=rf'bad_{name}\.pth.*getattr\(.*HistoryBuffer.*{name}'):
            safe_torch_load(bad)


def test_allow_list_holds_no_generic_callable():
    import builtins

    allowed = checkpoint_io.ALLOWED_GLOBALS
    assert builtins.getattr not in allowed and builtins.eval not in allowed and builtins.setattr not in allowed
    # the allow-list is the gate's own: torch's global list stays as it was, for every other torch.load in the process
    user = torch.serialization.get_safe_globals()
    assert builtins.getattr not in user and not any(g in user for g in allowed)
    # inside the gate, the name builtins.getattr resolves to the restricted stand-in
    assert (checkpoint_io._history_buffer_statistic, 'builtins.getattr') in checkpoint_io._GATE_GLOBALS


def test_new_runner_checkpoints_contain_no_getattr(tmp_path):
    from test_foundation import _runner

    _runner(tmp_path, max_iters=2).train()
    ops = {(op.name, arg) for op, arg, _ in pickletools.genops(_data_pkl(tmp_path / 'iter_2.pth'))}
    assert not any(isinstance(a, str) and 'getattr' in a for _, a in ops)


def _data_pkl(path: Path) -> bytes:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith('data.pkl')))


def test_old_runner_checkpoint_with_getattr_history_buffer_loads_and_resumes(tmp_path, monkeypatch):
    """A checkpoint written by plain mmengine: HistoryBuffer.__getstate__ stores its statistics methods, which
    pickle protocol 2 writes as getattr(HistoryBuffer, 'min') & co."""
    from mmengine.logging.history_buffer import HistoryBuffer
    from test_foundation import _runner

    monkeypatch.delattr(HistoryBuffer, '__reduce__')  # plain mmengine pickling
    _runner(tmp_path, max_iters=2).train()
    monkeypatch.undo()
    assert b'getattr' in _data_pkl(tmp_path / 'iter_2.pth')
    loaded = safe_torch_load(tmp_path / 'iter_2.pth')
    buf = loaded['message_hub']['log_scalars']['train/loss']
    assert buf._statistics_methods['min'] is HistoryBuffer.min and buf.mean() == buf.mean()
    resumed = _runner(tmp_path, max_iters=4, resume=True)
    resumed.train()
    assert resumed.iter == 4


# ---- remote checkpoints ----

@pytest.fixture
def http_root(tmp_path, monkeypatch) -> Iterator[tuple[Path, str]]:
    """A web server on 127.0.0.1 serving tmp_path/www; torch's download cache in tmp_path/torch."""
    www = tmp_path / 'www'
    www.mkdir()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()


def test_benign_remote_checkpoint_downloads_and_loads(http_root):
    www, base = http_root
    atomic_torch_save({'w': torch.arange(3.0)}, www / 'good.pth')
    assert torch.equal(safe_torch_load(f'{base}/good.pth')['w'], torch.arange(3.0))


@pytest.mark.parametrize('gadget', ['pickle __reduce__', *GADGETS])
def test_remote_malicious_checkpoint_is_refused_everywhere(tmp_path, http_root, monkeypatch, gadget):
    from mmengine.runner import CheckpointLoader
    from mmengine.runner import checkpoint as mm_ckpt

    from sdae_suite.backbones.pretrained import load_pretrained
    from sdae_suite.backbones.vit import VisionTransformer

    www, base = http_root
    marker = tmp_path / 'pwned'
    if gadget == 'pickle __reduce__':
        torch.save({'x': _Shell(str(marker))}, www / 'evil.pth')
    else:
        GADGETS[gadget](www / 'evil.pth', marker)
    url = f'{base}/evil.pth'
    monkeypatch.setattr(mm_ckpt, 'get_torchvision_models', lambda: {'evil': url})
    monkeypatch.setattr(mm_ckpt, 'get_external_models', lambda: {'evil': url})
    monkeypatch.setattr(mm_ckpt, 'get_mmcls_models', lambda: {'evil': url})
    for name in (url, 'torchvision://evil', 'modelzoo://evil', 'open-mmlab://evil', 'openmmlab://evil',
                 'mmcls://evil'):
        with pytest.raises(UnsafeCheckpointError, match=rf'{url}.*refused to unpickle'):
            CheckpointLoader.load_checkpoint(name, map_location='cpu')
        assert not marker.exists(), name
    # init_cfg of our backbone and mmengine's own Pretrained init
    vit = VisionTransformer(img_size=16, patch_size=8, embed_dim=8, depth=1, num_heads=1)
    with pytest.raises(UnsafeCheckpointError, match='refused'):
        load_pretrained(vit, url, 'student')
    from mmengine.model import BaseModule

    module = BaseModule(init_cfg=dict(type='Pretrained', checkpoint=url))
    module.fc = nn.Linear(1, 1)
    with pytest.raises(UnsafeCheckpointError, match='refused'):
        module.init_weights()
    assert not marker.exists()


def test_runner_load_from_and_resume_urls_are_refused(tmp_path, http_root):
    from test_foundation import _runner

    www, base = http_root
    marker = tmp_path / 'pwned'
    _write_eval_gadget(www / 'evil.pth', marker)
    for resume in (False, True):
        runner = _runner(tmp_path / f'run{resume}', max_iters=2, resume=resume)
        runner._load_from = f'{base}/evil.pth'
        with pytest.raises(UnsafeCheckpointError, match=r'evil\.pth.*refused'):
            runner.train()
        assert not marker.exists()


def test_s3_and_pavi_schemes_go_through_the_gate(tmp_path, monkeypatch):
    import mmengine.fileio

    marker = tmp_path / 'pwned'
    data = _write_eval_gadget(tmp_path / 'evil.pth', marker).read_bytes()

    class FakeBackend:
        def get(self, filepath):
            return data

    monkeypatch.setattr(mmengine.fileio, 'get_file_backend', lambda *a, **k: FakeBackend())
    from mmengine.runner import CheckpointLoader

    for name in ('s3://bucket/evil.pth', 'cluster:s3://bucket/evil.pth', 'petrel://bucket/evil.pth'):
        with pytest.raises(UnsafeCheckpointError, match=rf'{name}: refused'):
            CheckpointLoader.load_checkpoint(name)
    assert not marker.exists()
    with pytest.raises(ImportError, match=r'pavi://x/evil\.pth: .*needs the pavi package'):
        CheckpointLoader.load_checkpoint('pavi://x/evil.pth')


def test_every_registered_scheme_is_gated():
    from mmengine.runner import CheckpointLoader

    known = {'', 'http://', 'https://', 'torchvision://', 'modelzoo://', 'open-mmlab://', 'openmmlab://', 'mmcls://',
             'pavi://', r'(\S+\:)?s3://'}
    assert known <= set(CheckpointLoader._schemes)
    for prefix, loader in CheckpointLoader._schemes.items():
        assert loader.__module__ == 'sdae_suite.engine.checkpoint_io', (prefix, loader)
    # a scheme registered later by another library is refused by the gate rather than trusted
    CheckpointLoader.register_scheme(prefixes='weird://', loader=lambda f, m=None: torch.load(f), force=True)
    try:
        with pytest.raises(UnsafeCheckpointError, match=r"weird://x\.pth: checkpoints with the scheme 'weird://'"):
            safe_torch_load('weird://x.pth')
        checkpoint_io.install_safe_checkpoint_io()
        with pytest.raises(UnsafeCheckpointError, match='weird://'):
            CheckpointLoader.load_checkpoint('weird://x.pth')
    finally:
        CheckpointLoader._schemes.pop('weird://', None)


class _Shell:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_directory_and_text_file_give_clear_errors(tmp_path):
    (tmp_path / 'run').mkdir()
    atomic_torch_save({'w': torch.ones(1)}, tmp_path / 'run' / 'epoch_3.pth')
    with pytest.raises(IsADirectoryError, match=r'run is a directory, not a checkpoint file.*newest: epoch_3\.pth'):
        safe_torch_load(tmp_path / 'run')
    (tmp_path / 'notes.txt').write_text('hello\n')
    with pytest.raises(Exception, match=r'notes\.txt'):
        safe_torch_load(tmp_path / 'notes.txt')


def test_atomic_writes_keep_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.atomic_write_bytes(b'x', tmp_path / 'a.json')
    finally:
        os.umask(old)
    assert (tmp_path / 'a.json').stat().st_mode & 0o777 == 0o644
