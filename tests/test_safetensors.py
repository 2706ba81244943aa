"""Backbone weights as .safetensors: tools/export_backbone.py writes one next to the .pth (same tensors, same meta in
the header); every --pretrained door (the transfer configs' backbone init, tools/train.py's meta, the probes, the
checks at the door) reads it, and timm / Hugging Face hub model.safetensors files too. A file that only claims to be
safetensors (a renamed pickle, a truncated file, a header promising more bytes than exist) is refused with one line
naming the file and the fix, and nothing in it runs."""
from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS as DET_MODELS
from mmengine.registry import MODELS, init_default_scope
from mmseg.registry import MODELS as SEG_MODELS
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer as TimmViT

from sdae_suite.backbones.pretrained import load_pretrained, read_backbone_state, read_meta
from sdae_suite.backbones.vit import VisionTransformer
from sdae_suite.commands import export_backbone as export_tool
from sdae_suite.commands import probe as probe_tool
from sdae_suite.commands import train as train_tool
from sdae_suite.contracts import BACKBONE_FORMAT, PretrainMeta
from sdae_suite.engine.atomic import atomic_torch_save
from sdae_suite.engine.checkpoint_io import safe_torch_load
from sdae_suite.engine.safetensors_io import META_KEY, SafetensorsFileError
from sdae_suite.preflight.checkpoints import checkpoint_file_problem
from sdae_suite.probes.features import ProbeCheckpointError, build_encoder

ROOT = Path(__file__).resolve().parents[1]
# The demo pretraining encoder (pretrain/configs/sdae_vit-tiny-p8_demo.py): what the demo transfer configs load.
ARCH = dict(img_size=64, patch_size=8, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0)
TRANSFER = ['det_configs/sdae_maskrcnn_demo.py', 'det_configs/sdae_vitdet_maskrcnn_demo.py',
            'seg_configs/sdae_upernet_demo.py', 'cls_configs/sdae_vit-tiny-p8_1xb64-ft_demo.py',
            'cls_configs/sdae_vit-tiny-p8_1xb32-linear_demo.py']
WHAT = 'the pretrained backbone (--pretrained)'


def _encoder(seed: int, **arch) -> dict[str, torch.Tensor]:
    """A timm-named encoder whose every tensor (norms and position table too) is distinctive."""
    torch.manual_seed(seed)
    enc = VisionTransformer(pos_embed='learned', **(arch or ARCH))
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_()
    return {k: v.clone() for k, v in enc.state_dict().items()}


@pytest.fixture(scope='module')
def exported(tmp_path_factory) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """(backbone.pth, backbone.safetensors, the student weights) exported from a raw pretraining checkpoint."""
    d = tmp_path_factory.mktemp('export')
    student, teacher = _encoder(1), _encoder(2)
    meta = PretrainMeta(method='sdae', arch=ARCH, epoch=3, config='pretrain/configs/sdae_vit-tiny-p8_demo.py',
                        git_commit='0' * 40)
    atomic_torch_save({'meta': {'epoch': 3, 'sdae': meta},
                       'state_dict': {**{f'encoder.{k}': v for k, v in student.items()},
                                      **{f'teacher.{k}': v for k, v in teacher.items()},
                                      'decoder.pred.weight': torch.randn(192, 16)}}, d / 'epoch_3.pth')
    export_tool.export_backbone(d / 'epoch_3.pth', d / 'backbone.pth')
    return d / 'backbone.pth', d / 'backbone.safetensors', student


# ---- the export ------------------------------------------------------------------------------------------------------
def test_export_writes_the_same_tensors_and_meta_as_safetensors(exported, tmp_path, capsys):
    pth, st, student = exported
    ours = safe_torch_load(pth)
    with safe_open(str(st), framework='pt') as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert header['format'] == 'pt'  # what timm / Hugging Face expect of PyTorch weights
    assert json.loads(header[META_KEY]) == ours['meta'] and ours['meta']['format'] == BACKBONE_FORMAT
    assert sorted(tensors) == sorted(ours['state_dict']) == sorted(student)
    for k, v in tensors.items():  # bit for bit, dtype included
        assert v.dtype == ours['state_dict'][k].dtype and torch.equal(v, ours['state_dict'][k]), k
        assert torch.equal(v, student[k]), k
    # the command prints both paths; OUT naming the .safetensors is refused (the .pth would be overwritten)
    src = pth.parent / 'epoch_3.pth'
    assert export_tool.main([str(src), str(tmp_path / 'b.pth'), '--branch', 'teacher']) == 0
    out = capsys.readouterr().out
    assert f'[export] {tmp_path / "b.pth"}: sdae teacher, epoch 3' in out
    assert f'[export] {tmp_path / "b.safetensors"}: ' in out and (tmp_path / 'b.safetensors').is_file()
    assert read_meta(tmp_path / 'b.safetensors')['branch'] == 'teacher'
    assert export_tool.main([str(src), str(tmp_path / 'c.safetensors')]) == 2
    err = capsys.readouterr().err
    assert 'names the .safetensors file; pass the .pth path' in err and not list(tmp_path.glob('c.*'))


def test_a_tuple_in_the_arch_gives_the_same_meta_in_both_files(tmp_path):
    arch = dict(TINY, img_size=(32, 32), mlp_ratio=4.0)  # JSON has no tuple: both files get the list
    sd = {f'encoder.{k}': v for k, v in _encoder(4, **arch).items()}
    atomic_torch_save({'meta': {'sdae': PretrainMeta(method='mae', arch=arch, epoch=1, config='c.py', git_commit='g')},
                       'state_dict': sd}, tmp_path / 'run.pth')
    meta = export_tool.export_backbone(tmp_path / 'run.pth', tmp_path / 'mae.pth')
    assert meta['arch']['img_size'] == [32, 32]
    assert read_meta(tmp_path / 'mae.pth') == read_meta(tmp_path / 'mae.safetensors') == meta


# ---- (a), (b): every transfer config's backbone, initialised from either file, is the same bit for bit --------------
def _transfer_backbone(config: str, pretrained: Path, seed: int) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The config's backbone as tools/train.py builds it with --pretrained, after the Runner's init_weights();
    and the meta tools/train.py records (its read_meta)."""
    cfg = train_tool.build_cfg(train_tool.parse_args([str(ROOT / config), '--pretrained', str(pretrained)]))
    assert checkpoint_file_problem(cfg.model.backbone.init_cfg.checkpoint, WHAT) is None  # the check at the door
    init_default_scope(cfg.default_scope)
    torch.manual_seed(seed)  # a different random init per file: anything not loaded from it would differ
    if cfg.default_scope == 'mmengine':  # the classifier sets the backbone's final norm / out_indices by protocol
        classifier = MODELS.build(cfg.model)
        classifier.init_weights()
        backbone = classifier.backbone
    else:
        backbone = (DET_MODELS if cfg.default_scope == 'mmdet' else SEG_MODELS).build(cfg.model.backbone)
        backbone.init_weights()
    return backbone.state_dict(), train_tool.pretrained_of(cfg)[1]


@pytest.mark.parametrize('config', TRANSFER)
def test_transfer_backbones_load_the_safetensors_bit_for_bit(config, exported):
    pth, st, student = exported
    from_pth, meta_pth = _transfer_backbone(config, pth, seed=0)
    from_st, meta_st = _transfer_backbone(config, st, seed=1)
    assert sorted(from_pth) == sorted(from_st)
    for k, v in from_pth.items():
        assert v.dtype == from_st[k].dtype and torch.equal(v, from_st[k]), k
    loaded = [k for k in from_st if k.startswith('blocks.') and k in student]
    assert len(loaded) > 50 and all(torch.equal(from_st[k], student[k]) for k in loaded)  # from the file, not init
    assert meta_st == meta_pth == safe_torch_load(pth)['meta']  # (b) what tools/train.py records


def test_the_meta_and_the_layout_read_from_the_safetensors_are_the_pth_ones(exported):
    pth, st, _ = exported
    assert read_meta(st) == read_meta(pth) == safe_torch_load(pth)['meta']
    (sd_pth, rep_pth), (sd_st, rep_st) = read_backbone_state(pth), read_backbone_state(st)
    assert rep_st.layout == rep_pth.layout == 'exported backbone (sdae, epoch 3)' and rep_st.meta == rep_pth.meta
    assert rep_st.branch == 'student' and sorted(sd_st) == sorted(sd_pth)


# ---- (c) timm / Hugging Face hub model.safetensors ------------------------------------------------------------------
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def _timm_hub_file(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """What timm's push_to_hub writes: a timm VisionTransformer's state dict (with its classifier), format 'pt'."""
    torch.manual_seed(3)
    sd = TimmViT(num_classes=5, **TINY).state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(folder / 'model.safetensors'), metadata={'format': 'pt'})
    return folder / 'model.safetensors', sd


def test_a_timm_hub_model_safetensors_loads_like_its_pth(tmp_path):
    path, timm_sd = _timm_hub_file(tmp_path / 'hub')
    assert checkpoint_file_problem(path, WHAT) is None and read_meta(path) is None
    torch.save(timm_sd, tmp_path / 'same.pth')
    model, twin = VisionTransformer(pos_embed='learned', **TINY), VisionTransformer(pos_embed='learned', **TINY)
    report, twin_report = load_pretrained(model, path), load_pretrained(twin, tmp_path / 'same.pth')
    assert report.layout == twin_report.layout == 'timm state dict'
    dropped = [{cat: sorted(keys) for cat, keys in r.dropped.items()} for r in (report, twin_report)]
    assert dropped[0] == dropped[1] == {'classification head': ['head.bias', 'head.weight']}
    for k, v in model.state_dict().items():
        assert torch.equal(v, timm_sd[k]), k
    # through a transfer backbone's init_cfg, as --pretrained gives it
    from sdae_suite.backbones.vit_backbone import SdAEViT

    backbone = SdAEViT(out_indices=[1], **TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    backbone.init_weights()
    assert torch.equal(backbone.blocks[1].mlp.fc2.weight, timm_sd['blocks.1.mlp.fc2.weight'])
    # a hub URL is named with the fix (download first), not handed to mmengine's torch-only remote loaders
    url = 'https://huggingface.co/timm/x/resolve/main/model.safetensors'
    with pytest.raises(SafetensorsFileError, match=f'^{url}: .*read from a local path; download it first'):
        load_pretrained(VisionTransformer(**TINY), url)


# ---- the probes (tools/probe.py --name NAME=PATH) --------------------------------------------------------------------
@pytest.fixture(scope='module')
def cls_data(tmp_path_factory) -> Path:
    """Three class folders of five tinted-noise images each."""
    root = tmp_path_factory.mktemp('cls')
    rng = np.random.default_rng(0)
    for c, name in enumerate(('blue', 'green', 'red')):
        (root / name).mkdir(parents=True)
        for i in range(5):
            img = rng.integers(0, 80, (36, 40, 3))
            img[..., 2 - c] += 150
            Image.fromarray(img.astype(np.uint8)).save(root / name / f'{i}.png')
    return root


def test_probes_read_safetensors_with_their_meta(exported, cls_data, tmp_path):
    pth, st, _ = exported
    hub, _ = _timm_hub_file(tmp_path / 'hub')
    out = tmp_path / 'probes'
    assert probe_tool.main(['--name', f'pth={pth}', '--name', f'st={st}', '--name', f'hub={hub}', '--cls-data',
                            str(cls_data), '--probes', 'knn', '--arch', ','.join(f'{k}={v}' for k, v in TINY.items()),
                            '--out', str(out)]) == 0
    res = {n: json.loads((out / n / 'knn_seed0.json').read_text()) for n in ('pth', 'st', 'hub')}
    assert res['st']['checkpoint_meta'] == res['pth']['checkpoint_meta'] == safe_torch_load(pth)['meta']
    assert res['st']['arch'] == res['pth']['arch'] == ARCH  # from the header's meta
    assert res['st']['metrics'] == res['pth']['metrics']  # the same encoder, so the same features
    assert res['hub']['checkpoint_meta'] is None and res['hub']['arch'] == TINY  # no meta: --arch


# ---- (d) files that only claim to be safetensors ---------------------------------------------------------------------
class _Pwn:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.system, (f'touch {self.target}',))


def _forged(tmp_path: Path, kind: str, marker: Path, good: bytes) -> Path:
    path = tmp_path / f'{kind}.safetensors'
    if kind == 'torch_save_renamed':  # torch.save's zip archive holding a payload
        torch.save({'state_dict': {'w': torch.ones(1)}, 'payload': _Pwn(str(marker))}, path)
    elif kind == 'pickle_renamed':  # a bare pickle stream
        path.write_bytes(pickle.dumps({'w': _Pwn(str(marker))}, protocol=2))
    elif kind == 'truncated':  # a download cut in the middle of the tensor data
        path.write_bytes(good[:len(good) // 2])
    elif kind == 'header_length_too_large':  # the 8-byte header length promises more bytes than the file has
        path.write_bytes(struct.pack('<Q', len(good) * 4) + good[8:])
    elif kind == 'tensor_beyond_the_end':  # a well-formed header whose last tensor ends past the end of the file
        n = struct.unpack('<Q', good[:8])[0]
        header = json.loads(good[8:8 + n])
        last = max((k for k in header if k != '__metadata__'), key=lambda k: header[k]['data_offsets'][1])
        header[last]['data_offsets'][1] += 4096
        text = json.dumps(header).encode()
        path.write_bytes(struct.pack('<Q', len(text)) + text + good[8 + n:])
    return path


BAD = ['torch_save_renamed', 'pickle_renamed', 'truncated', 'header_length_too_large', 'tensor_beyond_the_end']


@pytest.mark.parametrize('kind', BAD)
def test_a_file_that_only_claims_to_be_safetensors_is_refused_at_every_door(kind, exported, cls_data, tmp_path,
                                                                            capsys):
    marker = tmp_path / 'pwned'
    bad = _forged(tmp_path, kind, marker, exported[1].read_bytes())
    fix = 'Rename it to .pth' if kind.endswith('renamed') else 'export it again with tools/export_backbone.py'
    what = 'a torch.save checkpoint named .safetensors' if kind.endswith('renamed') else 'truncated or corrupt'

    def one_line(msg: str) -> str:
        assert str(bad) in msg and what in msg and fix in msg and '\n' not in msg, msg
        return msg

    # the check at the door, from the header alone
    one_line(checkpoint_file_problem(bad, WHAT))
    # tools/train.py --pretrained: stopped before any model is built
    with pytest.raises(SystemExit) as e:
        train_tool.main([str(ROOT / TRANSFER[2]), '--work-dir', str(tmp_path / 'w'), '--pretrained', str(bad)])
    msg = one_line(str(e.value.code))
    assert msg.startswith('[train] the pretrained backbone (--pretrained') and f'checkpoint) {bad} is ' in msg
    # the loader (det / seg / cls backbone init, read_meta), called directly
    for load in (lambda: load_pretrained(VisionTransformer(**TINY), bad), lambda: read_meta(bad)):
        with pytest.raises(SafetensorsFileError) as e:
            load()
        one_line(str(e.value))
    # the probes: their own error type, which tools/probe.py prints as one line
    with pytest.raises(ProbeCheckpointError):
        build_encoder(str(bad), TINY)
    assert probe_tool.main(['--name', f'x={bad}', '--cls-data', str(cls_data), '--probes', 'knn', '--out',
                            str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('probe: error: ') and one_line(err)
    assert not marker.exists()  # nothing in the file ran


def test_a_safetensors_file_with_another_extension_is_named(exported, tmp_path):
    renamed = tmp_path / 'backbone.pth'
    renamed.write_bytes(exported[1].read_bytes())
    msg = checkpoint_file_problem(renamed, WHAT)
    assert msg == f'{WHAT} {renamed} is a safetensors file with another extension; rename it to backbone.safetensors'


@pytest.mark.parametrize('entry', ['{"format": "sdae-suite/backbone"', '["sdae"]'])
def test_a_corrupt_meta_entry_is_named(entry, exported, tmp_path):
    bad = tmp_path / 'meta.safetensors'
    save_file(exported[2], str(bad), metadata={'format': 'pt', META_KEY: entry})
    msg = checkpoint_file_problem(bad, WHAT)
    assert msg.startswith(f"{WHAT} {bad}: the header entry '{META_KEY}' is corrupt") and 'export' in msg
    with pytest.raises(SafetensorsFileError, match='is corrupt'):
        read_meta(bad)
