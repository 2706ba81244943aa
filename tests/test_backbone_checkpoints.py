"""Every checkpoint layout users bring loads into the backbone with zero missing keys; anything else is a loud error."""
from __future__ import annotations

import re

import pytest
import torch

from sdae_suite.backbones.pretrained import CheckpointMismatchError, load_pretrained, read_backbone_state
from sdae_suite.backbones.vit import VisionTransformer
from sdae_suite.backbones.vit_backbone import SdAEViT
from sdae_suite.engine.atomic import atomic_torch_save

ARCH = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0)


def _encoder_sd(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    enc = VisionTransformer(pos_embed='learned', **ARCH)
    with torch.no_grad():
        enc.pos_embed.normal_()
    return {k: v.clone() for k, v in enc.state_dict().items()}


STUDENT, TEACHER = _encoder_sd(1), _encoder_sd(2)
DECODER = {'decoder_embed.weight': torch.randn(16, 32), 'decoder_pos_embed': torch.randn(1, 17, 16),
           'decoder_blocks.0.norm1.weight': torch.ones(16), 'decoder_pred.weight': torch.randn(32, 16),
           'mask_token': torch.zeros(1, 1, 16)}

MMPRETRAIN_NAMES = [  # timm name -> mmpretrain VisionTransformer name
    (r'^patch_embed\.proj\.', 'patch_embed.projection.'), (r'^blocks\.(\d+)\.norm1\.', r'layers.\1.ln1.'),
    (r'^blocks\.(\d+)\.norm2\.', r'layers.\1.ln2.'), (r'^blocks\.(\d+)\.attn\.', r'layers.\1.attn.'),
    (r'^blocks\.(\d+)\.mlp\.fc1\.', r'layers.\1.ffn.layers.0.0.'),
    (r'^blocks\.(\d+)\.mlp\.fc2\.', r'layers.\1.ffn.layers.1.'),
    (r'^norm\.', 'ln1.')]


def _to_mmpretrain(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for pat, rep in MMPRETRAIN_NAMES:
            k = re.sub(pat, rep, k)
        out['backbone.' + k] = v
    return out


def _layouts() -> dict[str, tuple[object, str | None, dict[str, torch.Tensor]]]:
    """name -> (file content, branch to ask for, expected encoder weights)."""
    arch = {k: ARCH[k] for k in ('img_size', 'patch_size', 'embed_dim', 'depth', 'num_heads', 'mlp_ratio')}
    exported_meta = dict(format='sdae-suite/backbone', version=1, method='sdae', branch='teacher', epoch=3, arch=arch,
                         config='pretrain/configs/x.py', git_commit='abc')
    raw = {'meta': {'sdae': {'method': 'sdae', 'arch': arch, 'epoch': 3}, 'epoch': 3},
           'state_dict': {**{f'encoder.{k}': v for k, v in STUDENT.items()},
                          **{f'teacher.{k}': v for k, v in TEACHER.items()},
                          'decoder.blocks.0.norm1.weight': torch.ones(16), 'decoder.pred.weight': torch.randn(32, 16)},
           'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-3, 'params': [0]}]}}
    official_sdae = {'model': {**STUDENT, **DECODER}, 'model_teacher': dict(TEACHER), 'epoch': 299,
                     'optimizer': {'state': {}, 'param_groups': []}}
    mmpretrain = {'meta': {'mmpretrain_version': '1.2.0'},
                  'state_dict': {**_to_mmpretrain(STUDENT), 'neck.decoder_blocks.0.ln1.weight': torch.ones(16),
                                 'neck.mask_token': torch.zeros(1, 1, 16), 'head.fc.weight': torch.randn(10, 32),
                                 'data_preprocessor.mean': torch.zeros(3, 1, 1)}}
    return {
        'exported backbone': ({'state_dict': dict(TEACHER), 'meta': exported_meta}, 'student', TEACHER),
        'raw pretraining, student': (raw, 'student', STUDENT),
        'raw pretraining, teacher': (raw, 'teacher', TEACHER),
        'official SdAE, student': (official_sdae, 'student', STUDENT),
        'official SdAE, teacher': (official_sdae, 'teacher', TEACHER),
        'official MAE': ({'model': {**STUDENT, **DECODER}}, None, STUDENT),
        'timm': ({**STUDENT, 'head.weight': torch.randn(10, 32), 'head.bias': torch.zeros(10),
                  'fc_norm.weight': torch.ones(32)}, None, STUDENT),
        'mmpretrain / mmselfsup': (mmpretrain, None, STUDENT),
        'mmdet / mmseg run': ({'state_dict': {**{f'backbone.{k}': v for k, v in STUDENT.items()},
                                              'roi_head.bbox_head.fc_cls.weight': torch.randn(7, 8)}}, None, STUDENT),
    }


@pytest.mark.parametrize('name', list(_layouts()))
def test_every_layout_loads_with_zero_missing_keys(name, tmp_path):
    content, branch, expected = _layouts()[name]
    path = tmp_path / 'ckpt.pth'
    atomic_torch_save(content, path)
    model = SdAEViT(out_indices=[1], final_norm='last', **ARCH)
    report = load_pretrained(model, path, branch=branch)
    own = model.state_dict()
    assert sorted(report.loaded) == sorted(own)  # every backbone tensor came from the file
    for k, v in expected.items():
        torch.testing.assert_close(own[k], v, rtol=0, atol=0, msg=k)
    dropped = {k for keys in report.dropped.values() for k in keys}
    if 'official' in name:
        decoder = report.dropped['pretraining decoder']
        assert any(k.endswith('decoder_embed.weight') for k in decoder)
        assert any(k.endswith('mask_token') for k in decoder)
    if 'SdAE' in name or 'raw' in name:
        assert any(c.startswith('other branch') for c in report.dropped)
    if name.startswith('mmpretrain'):
        assert {'backbone.neck.mask_token', 'neck.mask_token', 'head.fc.weight'} & dropped
    if name == 'exported backbone':
        assert any('teacher encoder' in n for n in report.notes)  # asked for student, told what the file holds


def test_two_encoder_files_need_an_explicit_branch(tmp_path):
    content, _, _ = _layouts()['official SdAE, student']
    path = tmp_path / 'sdae.pth'
    atomic_torch_save(content, path)
    with pytest.raises(CheckpointMismatchError, match="branch='student'"):
        read_backbone_state(path, branch=None)
    mae = tmp_path / 'mae.pth'
    atomic_torch_save({'model': dict(STUDENT)}, mae)
    with pytest.raises(CheckpointMismatchError, match='no teacher|one encoder'):
        read_backbone_state(mae, branch='teacher')


def test_mismatched_checkpoint_raises_with_the_key_list(tmp_path):
    path = tmp_path / 'small.pth'
    atomic_torch_save(dict(STUDENT), path)
    wider = SdAEViT(out_indices=[1], **{**ARCH, 'embed_dim': 48})
    with pytest.raises(CheckpointMismatchError) as e:
        load_pretrained(wider, path)
    msg = str(e.value)
    assert 'shape mismatches' in msg and 'blocks.0.attn.qkv.weight: checkpoint (96, 32) vs model (144, 48)' in msg
    assert str(path) in msg

    deeper = SdAEViT(out_indices=[2], **{**ARCH, 'depth': 3})
    with pytest.raises(CheckpointMismatchError) as e:
        load_pretrained(deeper, path)
    assert 'backbone keys missing' in str(e.value) and 'blocks.2.mlp.fc2.weight' in str(e.value)

    broken = dict(STUDENT)
    broken.pop('blocks.1.norm2.bias')
    broken['blocks.1.gamma_1'] = torch.ones(32)  # layer scale: a parameter this ViT does not have
    atomic_torch_save({'model': broken}, path)
    with pytest.raises(CheckpointMismatchError) as e:
        load_pretrained(SdAEViT(out_indices=[1], **ARCH), path)
    assert 'blocks.1.norm2.bias' in str(e.value) and 'blocks.1.gamma_1' in str(e.value)


def test_final_norm_none_drops_norm_and_reports_it(tmp_path):
    path = tmp_path / 'timm.pth'
    atomic_torch_save(dict(STUDENT), path)
    model = SdAEViT(out_indices=[0, 1], final_norm='none', **ARCH)
    report = load_pretrained(model, path)
    assert model.norm is None and 'norm.weight' not in model.state_dict()
    assert sorted(report.dropped["final norm (backbone built with final_norm='none')"]) == ['norm.bias', 'norm.weight']


def test_init_weights_reads_init_cfg(tmp_path):
    path = tmp_path / 'raw.pth'
    content, _, _ = _layouts()['raw pretraining, teacher']
    atomic_torch_save(content, path)
    model = SdAEViT(out_indices=[1], final_norm='last', init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                                                      branch='teacher'), **ARCH)
    model.init_weights()
    assert model.is_init
    torch.testing.assert_close(model.blocks[1].mlp.fc2.weight, TEACHER['blocks.1.mlp.fc2.weight'], rtol=0, atol=0)
