"""ViTDet's decomposed relative positions in the suite's ViT: table shapes per block (window vs global grid),
zero-init from checkpoints without them, loading (and interpolating) checkpoints with them, the bias against an
element-by-element reference, interpolation for other grid sizes, gradients, and equality with timm's SAM ViT (the same
architecture) given the same weights."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from sdae_suite.backbones.pretrained import load_pretrained
from sdae_suite.backbones.vit import Attention, VisionTransformer
from sdae_suite.backbones.vit_backbone import SdAEViT
from sdae_suite.engine.atomic import atomic_torch_save

SMALL = dict(patch_size=8, embed_dim=32, depth=4, num_heads=2, drop_path_rate=0.0, with_cls_token=False)
VITDET = dict(SMALL, window_size=4, global_attn_indexes=[1, 3], use_rel_pos=True, out_indices=[3])


def _fill(model: torch.nn.Module, seed: int = 0) -> None:
    """Make every tensor informative (zero-initialised tables and biases would hide index mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)


def test_table_shapes_per_block_window_vs_global():
    # 48 px / 8 = 6x6 grid; global tables sized for rel_pos_img_size 96 px = 12x12 (ViTDet: 224-grid pos table, 1024 px
    # rel-pos tables), windowed ones for the 4x4 window
    m = SdAEViT(img_size=48, rel_pos_img_size=96, **VITDET)
    head_dim = 32 // 2
    for i, blk in enumerate(m.blocks):
        side = 12 if i in (1, 3) else 4
        assert blk.window_size == (0 if i in (1, 3) else 4)
        assert blk.attn.rel_pos_h.shape == blk.attn.rel_pos_w.shape == (2 * side - 1, head_dim), i
        assert blk.rel_pos is None  # not the BEiT table
        assert not blk.attn.rel_pos_h.any() and not blk.attn.rel_pos_w.any()  # zero-initialised
    rect = SdAEViT(img_size=48, rel_pos_img_size=(64, 96), **VITDET)
    assert rect.blocks[1].attn.rel_pos_h.shape[0] == 15 and rect.blocks[1].attn.rel_pos_w.shape[0] == 23
    plain = VisionTransformer(img_size=48, patch_size=8, embed_dim=32, depth=4, num_heads=2)
    assert not any('rel_pos' in k for k in plain.state_dict())  # pretraining ViT: no new parameters
    with pytest.raises(ValueError, match='with_cls_token=False'):
        VisionTransformer(img_size=48, patch_size=8, embed_dim=32, depth=2, num_heads=2, use_rel_pos=True)
    with pytest.raises(ValueError, match='exclusive'):
        SdAEViT(img_size=48, use_rel_pos_bias=True, **VITDET)


def _reference_attention(attn: Attention, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ViTDet's attention written out pair by pair: logit(i, j) = q_i.k_j / sqrt(d) + q_i.Rh[hi - hj] + q_i.Rw[wi - wj],
    with the tables linearly interpolated to 2 * side - 1 rows first when they are sized for another grid."""
    b, n, d = x.shape
    heads = attn.num_heads
    hd = d // heads
    q, k, v = attn.qkv(x).reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
    h, w = size

    def table(t: torch.Tensor, side: int) -> torch.Tensor:
        if t.shape[0] == 2 * side - 1:
            return t
        return F.interpolate(t.t()[None], size=2 * side - 1, mode='linear')[0].t()

    rh, rw = table(attn.rel_pos_h, h), table(attn.rel_pos_w, w)
    logits = torch.empty(b, heads, n, n)
    for i in range(n):
        for j in range(n):
            hi, wi, hj, wj = i // w, i % w, j // w, j % w
            qi = q[:, :, i]
            logits[:, :, i, j] = ((qi * k[:, :, j]).sum(-1) / hd ** 0.5 + (qi * rh[hi - hj + h - 1]).sum(-1)
                                  + (qi * rw[wi - wj + w - 1]).sum(-1))
    out = logits.softmax(-1) @ v
    return attn.proj(out.transpose(1, 2).reshape(b, n, d))


@pytest.mark.parametrize('table_side, size', [((3, 4), (3, 4)), ((5, 5), (3, 4))],
                         ids=['table-fits', 'interpolated'])
def test_decomposed_bias_against_pairwise_reference(table_side, size):
    torch.manual_seed(0)
    attn = Attention(32, 2, rel_pos_size=table_side)
    _fill(attn)
    x = torch.randn(2, size[0] * size[1], 32)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, None, size), _reference_attention(attn, x, size), rtol=0, atol=1e-5)


def test_gradient_reaches_every_table():
    m = SdAEViT(img_size=48, **VITDET).train()
    _fill(m)
    m(torch.randn(2, 3, 40, 56))[0].square().mean().backward()  # 5x7 grid: padded windows, interpolated globals
    for i, blk in enumerate(m.blocks):
        for t in (blk.attn.rel_pos_h, blk.attn.rel_pos_w):
            assert t.grad is not None and t.grad.abs().sum() > 0, i


def test_zero_init_when_absent_and_interpolated_when_sized_otherwise(tmp_path):
    torch.manual_seed(0)
    src = SdAEViT(img_size=48, **dict(VITDET, use_rel_pos=False))  # same ViT, no tables
    _fill(src)
    plain_sd = dict(src.state_dict())
    atomic_torch_save(plain_sd, tmp_path / 'plain.pth')
    m = SdAEViT(img_size=48, **VITDET)
    report = load_pretrained(m, tmp_path / 'plain.pth')
    assert sorted(report.zero_init) == sorted(f'blocks.{i}.attn.rel_pos_{a}' for i in range(4) for a in 'hw')
    x = torch.randn(1, 3, 48, 48)
    src.eval(), m.eval()
    with torch.no_grad():  # zero tables: exactly the function without relative positions
        torch.testing.assert_close(m(x)[0], src(x)[0], rtol=0, atol=1e-6)

    # a checkpoint whose global tables were trained for another grid (9 rows = a 5x5 grid; the model has 6x6 -> 11)
    with_tables = dict(plain_sd)
    for i in range(len(m.blocks)):
        side = 5 if i in (1, 3) else 4
        for a in 'hw':
            with_tables[f'blocks.{i}.attn.rel_pos_{a}'] = torch.randn(2 * side - 1, 16)
    atomic_torch_save(with_tables, tmp_path / 'tables.pth')
    report = load_pretrained(m, tmp_path / 'tables.pth')
    assert report.zero_init == [] and any('interpolated linearly' in n for n in report.notes)
    torch.testing.assert_close(m.blocks[0].attn.rel_pos_h, with_tables['blocks.0.attn.rel_pos_h'], rtol=0, atol=0)
    want = F.interpolate(with_tables['blocks.1.attn.rel_pos_w'].t()[None], size=11, mode='linear')[0].t()
    torch.testing.assert_close(m.blocks[1].attn.rel_pos_w, want, rtol=0, atol=0)


def _timm_sam(img_size: int) -> torch.nn.Module:
    ref = timm.models.vision_transformer_sam.VisionTransformerSAM(
        img_size=img_size, patch_size=8, embed_dim=32, depth=4, num_heads=2, window_size=4,
        global_attn_indexes=(1, 3), use_rel_pos=True, neck_chans=None, num_classes=0)
    ref.neck = torch.nn.Identity()
    _fill(ref)
    return ref.eval()


@pytest.mark.parametrize('img_size', [64, 48], ids=['windows-tile', 'windows-padded'])
def test_equal_to_timm_sam_vit_given_the_same_weights(img_size):
    ref = _timm_sam(img_size)
    sd = ref.state_dict()
    g = img_size // 8
    ours_sd = {k: v for k, v in sd.items() if not k.startswith(('neck', 'head'))}
    ours_sd['pos_embed'] = torch.cat([torch.zeros(1, 1, 32), sd['pos_embed'].reshape(1, g * g, 32)], 1)  # cls slot
    ours = SdAEViT(img_size=img_size, **VITDET).eval()
    ours.load_state_dict(ours_sd, strict=True)
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], ref.forward_features(x), rtol=1e-5, atol=5e-5)  # values ~20


def test_speed_benchmark_compares_the_same_architecture():
    """tools/benchmark_vitdet.py's pair: the ViTDet config's backbone and timm's samvit_base_patch16 have the same
    parameters (names and shapes) but for the position table, which ViTDet keeps at the 224 grid (run at 64 px here)."""
    from sdae_suite.benchmarks.vitdet_speed import measure, timm_samvit_reference, vit_from_config

    ours, ref = vit_from_config(img_size=64), timm_samvit_reference(64, drop_path_rate=0.1)
    shapes = {k: tuple(v.shape) for k, v in ours.named_parameters() if k != 'pos_embed'}
    assert shapes == {k: tuple(v.shape) for k, v in ref.named_parameters() if k != 'pos_embed'}
    assert shapes['blocks.2.attn.rel_pos_h'] == (7, 64) and shapes['blocks.0.attn.rel_pos_h'] == (27, 64)
    result = measure(img_size=64, rounds=1, warmup=0)
    assert set(result.median_s) == {'sdae_vitdet', 'timm_samvit'} and result.ratio_of_medians > 0
