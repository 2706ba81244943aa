"""The transfer backbone: equality with timm, position-embedding resizing, window attention, frozen stages, activation
checkpointing, the simple feature pyramid and layer-wise lr decay."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from sdae_suite.backbones.layer_decay import LayerDecayConstructor
from sdae_suite.backbones.necks import SimpleFeaturePyramid
from sdae_suite.backbones.pretrained import load_pretrained
from sdae_suite.backbones.vit import VisionTransformer, resize_pos_embed
from sdae_suite.backbones.vit_backbone import SdAEViT
from sdae_suite.engine.atomic import atomic_torch_save

TINY = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)  # the demo arch (ViT-Tiny/16)


def _timm_vit(img_size: int) -> nn.Module:
    torch.manual_seed(0)
    m = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=img_size, num_classes=10).eval()
    with torch.no_grad():  # timm zero-inits some tensors; make every tensor informative
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m


@pytest.fixture(scope='module')
def timm_ckpt(tmp_path_factory) -> tuple[nn.Module, str]:
    m = _timm_vit(224)
    path = tmp_path_factory.mktemp('timm') / 'vit_tiny.pth'
    atomic_torch_save(m.state_dict(), path)
    return m, str(path)


@pytest.mark.parametrize('img_size', [224, 128])
def test_tokens_equal_timm_at_pretraining_resolution(img_size, tmp_path):
    ref = _timm_vit(img_size)
    path = tmp_path / 'timm.pth'
    atomic_torch_save(ref.state_dict(), path)
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        want = ref.forward_features(x)  # [B, 1 + HW, D], final norm applied
    enc = VisionTransformer(img_size=img_size, pos_embed='learned', **TINY).eval()
    missing, unexpected = enc.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith('head')})
    assert not missing and not unexpected
    backbone = SdAEViT(img_size=img_size, out_indices=[11], final_norm='all', drop_path_rate=0.0, **TINY)
    load_pretrained(backbone, path)
    backbone.eval()
    with torch.no_grad():
        torch.testing.assert_close(enc(x), want, rtol=0, atol=1e-5)
        (fmap,) = backbone(x)
    g = img_size // 16
    assert fmap.shape == (2, 192, g, g)
    torch.testing.assert_close(fmap.flatten(2).transpose(1, 2), want[:, 1:], rtol=0, atol=1e-5)


def test_pos_embed_untouched_when_sizes_match_and_resized_once_otherwise(timm_ckpt, monkeypatch):
    ref, path = timm_ckpt
    logs = []
    monkeypatch.setattr('sdae_suite.backbones.vit_backbone.print_log', lambda msg, **kw: logs.append(msg))
    m = SdAEViT(img_size=224, out_indices=[5, 11], final_norm='last', drop_path_rate=0.0, **TINY)
    load_pretrained(m, path)
    m.eval()
    assert resize_pos_embed(m.pos_embed, (14, 14), (14, 14)) is m.pos_embed
    torch.testing.assert_close(m.pos_embed, ref.pos_embed, rtol=0, atol=0)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        out = m(x)[-1]
        torch.testing.assert_close(out.flatten(2).transpose(1, 2), ref.forward_features(x)[:, 1:], rtol=0, atol=1e-5)
        assert logs == []  # nothing resized, nothing logged
        # non-square, not divisible by the patch size: ceil grid, pos-embed resized bicubically, logged once
        a = m(torch.randn(1, 3, 200, 330))
        b = m(torch.randn(1, 3, 97, 64))
    assert [t.shape for t in a] == [(1, 192, 13, 21)] * 2 and b[0].shape == (1, 192, 7, 4)
    assert len(logs) == 1 and '14x14' in logs[0] and '13x21' in logs[0]
    want = F.interpolate(ref.pos_embed[:, 1:].reshape(1, 14, 14, 192).permute(0, 3, 1, 2), size=(13, 21),
                         mode='bicubic', align_corners=False).permute(0, 2, 3, 1).reshape(1, 13 * 21, 192)
    torch.testing.assert_close(m.patch_pos_embed((13, 21)), want)


def test_checkpoint_grid_resized_to_model_grid_at_load(timm_ckpt):
    ref, path = timm_ckpt
    m = SdAEViT(img_size=(320, 512), out_indices=[11], **TINY)
    report = load_pretrained(m, path)
    assert m.grid == (20, 32) and any('14x14' in n and '20x32' in n for n in report.notes)
    torch.testing.assert_close(m.pos_embed, resize_pos_embed(ref.pos_embed, (14, 14), (20, 32)))


def test_window_attention_and_rel_pos_bias(timm_ckpt):
    _, path = timm_ckpt
    glob = SdAEViT(img_size=128, with_cls_token=False, out_indices=[11], drop_path_rate=0.0, **TINY)
    # one window covering the whole 8x8 grid, zero-initialised relative position bias: same function as global attention
    win = SdAEViT(img_size=128, with_cls_token=False, out_indices=[11], drop_path_rate=0.0, window_size=8,
                  global_attn_indexes=[2, 5, 8, 11], use_rel_pos_bias=True, **TINY)
    r1, r2 = load_pretrained(glob, path), load_pretrained(win, path)
    assert r1.dropped['cls token (backbone built without one)'] == ['cls_token']
    assert len(r2.zero_init) == 12 and all(k.endswith('rel_pos.table') for k in r2.zero_init)
    x = torch.randn(1, 3, 128, 128)
    glob.eval(), win.eval()
    with torch.no_grad():
        torch.testing.assert_close(win(x)[0], glob(x)[0], rtol=0, atol=1e-5)
        small = SdAEViT(img_size=128, with_cls_token=False, out_indices=[11], window_size=3, global_attn_indexes=[11],
                        use_rel_pos_bias=True, **TINY).eval()
        assert small(torch.randn(1, 3, 120, 100))[0].shape == (1, 192, 8, 7)  # windows padded over a 8x7 grid


def test_frozen_stages_and_activation_checkpointing():
    torch.manual_seed(0)
    m = SdAEViT(img_size=64, patch_size=16, embed_dim=32, depth=4, num_heads=2, out_indices=[1, 3],
                drop_path_rate=0.0, frozen_stages=2)
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    assert {'pos_embed', 'cls_token', 'patch_embed.proj.weight'} <= frozen
    assert all(n.startswith(('blocks.0.', 'blocks.1.', 'pos_embed', 'cls_token', 'patch_embed')) for n in frozen)
    assert m.blocks[2].attn.qkv.weight.requires_grad
    m.train()
    assert not m.blocks[1].training and m.blocks[2].training
    cp = SdAEViT(img_size=64, patch_size=16, embed_dim=32, depth=4, num_heads=2, out_indices=[1, 3],
                 drop_path_rate=0.0, with_cp=True)
    cp.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for model in (m, cp):
        sum(o.square().sum() for o in model(x)).backward()
    torch.testing.assert_close(cp.blocks[3].mlp.fc1.weight.grad, m.blocks[3].mlp.fc1.weight.grad)


def test_simple_feature_pyramid_shapes():
    neck = SimpleFeaturePyramid(in_channels=64, out_channels=32)
    outs = neck((torch.randn(2, 64, 8, 12),))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 32, 48), (2, 32, 16, 24), (2, 32, 8, 12), (2, 32, 4, 6),
                                              (2, 32, 2, 3)]


class _Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = SdAEViT(img_size=64, out_indices=[3, 11], use_rel_pos_bias=True, final_norm='last', **TINY)
        self.neck = nn.Sequential(nn.Conv2d(192, 16, 1), nn.BatchNorm2d(16))


def _expected_depth(name: str) -> int:
    if not name.startswith('backbone.'):
        return 13
    local = name[len('backbone.'):]
    if local.startswith(('cls_token', 'pos_embed', 'patch_embed')):
        return 0
    if local.startswith('blocks.'):
        return int(local.split('.')[1]) + 1
    return 13


def test_layer_decay_groups_on_the_real_backbone():
    model = _Detector()
    model.backbone.blocks[0].requires_grad_(False)  # frozen parameters get no group
    constructor = LayerDecayConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)),
        dict(layer_decay_rate=0.65))
    wrapper = constructor(model)
    groups = wrapper.optimizer.param_groups
    where = {id(p): g for g in groups for p in g['params']}
    names = dict(model.named_parameters())
    no_wd_names = {'backbone.pos_embed', 'backbone.cls_token'}
    checked = 0
    for name, p in names.items():
        if name.startswith('backbone.blocks.0.'):
            assert id(p) not in where
            continue
        g = where[id(p)]
        assert g['lr'] == pytest.approx(1e-3 * 0.65 ** (12 + 1 - _expected_depth(name)), rel=1e-9), name
        no_wd = p.ndim <= 1 or name in no_wd_names or name.endswith('rel_pos.table')
        assert g['weight_decay'] == (0.0 if no_wd else 0.05), name
        checked += 1
    assert checked == len(names) - len(list(model.backbone.blocks[0].parameters()))
    assert {g['layer_depth'] for g in groups} == set(range(2, 14)) | {0}
    assert max(g['lr'] for g in groups) == pytest.approx(1e-3)


def test_layer_decay_custom_keys_multiply_and_unknown_keys_fail():
    model = _Detector()
    paramwise = dict(layer_decay_rate=0.5,
                     custom_keys={'neck': dict(lr_mult=0.1), 'neck.0': dict(lr_mult=3.0, decay_mult=0.0),
                                  'blocks.11.mlp': dict(decay_mult=2.0)})
    wrapper = LayerDecayConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)), paramwise)(model)
    where = {id(p): g for g in wrapper.optimizer.param_groups for p in g['params']}
    names = dict(model.named_parameters())
    # the longest matching key wins: neck.0 (conv) gets x3 and no decay, neck.1 (BN) gets x0.1
    assert where[id(names['neck.0.weight'])]['lr'] == pytest.approx(3e-3)
    assert where[id(names['neck.0.weight'])]['weight_decay'] == 0.0
    assert where[id(names['neck.1.weight'])]['lr'] == pytest.approx(1e-4)
    # custom multipliers compose with layer decay (block 11 is depth 12 of 14: one step below the top)
    fc = where[id(names['backbone.blocks.11.mlp.fc1.weight'])]
    assert (fc['lr'], fc['weight_decay']) == (pytest.approx(5e-4), pytest.approx(0.1))
    assert where[id(names['backbone.blocks.11.mlp.fc1.bias'])]['weight_decay'] == 0.0  # biases never decay
    assert where[id(names['backbone.blocks.10.mlp.fc1.weight'])]['weight_decay'] == pytest.approx(0.05)
    with pytest.raises(ValueError, match=r"\['layer_decay'\].*layer_decay_rate"):
        LayerDecayConstructor(dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3)),
                              dict(layer_decay=0.65))
    with pytest.raises(ValueError, match=r"custom_keys\['neck'\] has \['lr_multi'\]"):
        LayerDecayConstructor(dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3)),
                              dict(layer_decay_rate=0.65, custom_keys={'neck': dict(lr_multi=0.1)}))
