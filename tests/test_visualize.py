"""visualize/features.py and tools/visualize_features.py on tiny ViTs: attention recomputed from the last block equals
what the block applied, cls maps sum to 1, PCA maps have the patch grid, everything is deterministic for a seed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdae_suite.backbones.vit import VisionTransformer
from sdae_suite.commands import visualize_features
from sdae_suite.visualize.features import (
    attention_weights,
    cls_attention,
    feature_maps,
    joint_pca,
    last_block_maps,
    random_encoder,
)

ARCH = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


def tiny_vit(seed: int = 0, **kw) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(**{**ARCH, **kw}).eval()


@pytest.mark.parametrize('rel_pos', [False, True])
def test_recomputed_attention_is_what_the_block_applied(rel_pos):
    model = tiny_vit(use_rel_pos_bias=rel_pos)
    if rel_pos:  # zero-initialised by design: make the bias matter
        for blk in model.blocks:
            torch.nn.init.normal_(blk.rel_pos.table, std=1.0)
    x = torch.randn(2, 3, 32, 48)  # not square: a 4 x 6 grid
    seen = {}
    handle = model.blocks[-1].attn.register_forward_hook(lambda m, a, out: seen.update(out=out))
    attn, patches, grid = last_block_maps(model, x)
    handle.remove()
    assert grid == (4, 6) and attn.shape == (2, 2, 25, 25) and patches.shape == (2, 24, 32)
    assert torch.allclose(attn.sum(-1), torch.ones(2, 2, 25), atol=1e-5)
    # The weights times the values, through the output projection, give the SDPA module's own output.
    block = model.blocks[-1]
    with torch.no_grad():
        tokens, g = model.embed(x)
        xx = model.prepend_cls(tokens)
        for blk in model.blocks[:-1]:
            xx = blk(xx, g, 1)
        h = block.norm1(xx)
        v = block.attn.qkv(h).reshape(2, 25, 3, 2, 16).permute(2, 0, 3, 1, 4)[2]
        mixed = (attn @ v).transpose(1, 2).reshape(2, 25, 32)
        assert torch.allclose(block.attn.proj(mixed), seen['out'], atol=1e-5)
        bias = block.rel_pos(g, 1) if rel_pos else None
        assert torch.allclose(attention_weights(block.attn, h, bias), attn, atol=1e-6)


def test_cls_maps_sum_to_one_over_patches():
    attn, _, grid = last_block_maps(tiny_vit(), torch.randn(3, 3, 32, 32))
    maps = cls_attention(attn, grid)
    assert maps.shape == (3, 2, 4, 4) and (maps >= 0).all()
    assert torch.allclose(maps.sum(dim=(-2, -1)), torch.ones(3, 2), atol=1e-5)


def test_pca_maps_have_the_patch_grid_and_are_deterministic():
    x = torch.randn(3, 3, 40, 24)  # 5 x 3 patches
    enc = random_encoder(ARCH, seed=0)
    fm = feature_maps(enc.model, x)
    assert fm.pca.shape == (3, 5, 3, 3) and fm.attention.shape == (3, 2, 5, 3)
    assert fm.pca.min() == pytest.approx(0.0) and fm.pca.max() == pytest.approx(1.0)
    assert 0 < fm.explained.sum() <= 1 and (np.diff(fm.explained) <= 1e-6).all()
    again = feature_maps(random_encoder(ARCH, seed=0).model, x)
    np.testing.assert_array_equal(fm.pca, again.pca)
    np.testing.assert_array_equal(fm.attention, again.attention)
    other = feature_maps(random_encoder(ARCH, seed=1).model, x)
    assert not np.allclose(fm.attention, other.attention)
    # One fit and one min-max over the whole set (colours compare across images): each component spans [0, 1] over
    # the set, and the same patches fitted alone get other values.
    feats = torch.randn(2, 10, 8)
    proj, _ = joint_pca(feats)
    flat = proj.reshape(-1, 3)
    assert torch.allclose(flat.min(0).values, torch.zeros(3)) and torch.allclose(flat.max(0).values, torch.ones(3))
    assert not torch.allclose(joint_pca(feats[:1])[0], proj[:1], atol=1e-3)


def write_images(folder: Path, n: int, size: tuple[int, int] = (48, 40)) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(folder / f'img_{i}.png')


def test_tool_draws_one_row_per_checkpoint_of_any_layout(tmp_path):
    model = tiny_vit(seed=3)
    exported = tmp_path / 'exported.pth'
    torch.save({'meta': {'format': 'sdae-suite/backbone', 'version': 1, 'method': 'sdae', 'epoch': 7,
                         'branch': 'student', 'arch': ARCH}, 'state_dict': model.state_dict()}, exported)
    official = tmp_path / 'mae_official.pth'  # no metadata: the arch comes from the tensor shapes
    torch.save({'model': {**model.state_dict(), 'decoder_embed.weight': torch.zeros(4, 32)}}, official)
    write_images(tmp_path / 'images', 3)
    out = tmp_path / 'out'
    assert visualize_features.main([str(exported), f'MAE={official}', 'random', '--images', str(tmp_path / 'images'),
                                    '--num-images', '2', '--num-heads', '2', '--out', str(out)]) == 0
    manifest = json.loads((out / 'visuals.json').read_text())
    assert [r['name'] for r in manifest['rows']] == ['sdae 7ep student', 'MAE', 'random init']
    assert manifest['size'] == 32 and [Path(p).name for p in manifest['images']] == ['img_0.png', 'img_1.png']
    assert [f['file'] for f in manifest['figures']] == ['attention.png', 'pca.png']
    for f in ('attention.png', 'pca.png'):
        with Image.open(out / f) as im:
            assert im.width > 200 and im.height > 150
    first = (out / 'pca.png').read_bytes()
    visualize_features.main([str(exported), f'MAE={official}', 'random', '--images', str(tmp_path / 'images'),
                             '--num-images', '2', '--num-heads', '2', '--out', str(out)])
    assert (out / 'pca.png').read_bytes() == first  # the same pictures for the same inputs and seed


def test_bad_inputs_get_one_clear_message(tmp_path):
    write_images(tmp_path / 'images', 1)
    with pytest.raises(SystemExit, match=r'checkpoint not found: .*nope\.pth'):
        visualize_features.main([str(tmp_path / 'nope.pth'), '--images', str(tmp_path / 'images'), '--out', 'x'])
    with pytest.raises(SystemExit, match="'random' alone has no architecture"):
        visualize_features.main(['random', '--images', str(tmp_path / 'images'), '--out', str(tmp_path / 'o')])
    ckpt = tmp_path / 'c.pth'
    torch.save({'model': tiny_vit().state_dict()}, ckpt)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(SystemExit, match=r'--images .*empty: no .jpg/'):
        visualize_features.main([str(ckpt), '--images', str(tmp_path / 'empty'), '--out', str(tmp_path / 'o')])
    (tmp_path / 'images' / 'broken.png').write_bytes(b'not a png')
    with pytest.raises(SystemExit, match=r'broken\.png: not a readable image'):
        visualize_features.main([str(ckpt), '--images', str(tmp_path / 'images'), '--out', str(tmp_path / 'o')])
    no_cls = {k: v for k, v in tiny_vit().state_dict().items() if k != 'cls_token'}
    torch.save(no_cls, tmp_path / 'nocls.pth')
    with pytest.raises(SystemExit, match=r'nocls\.pth .* has no cls_token'):
        visualize_features.main([str(tmp_path / 'nocls.pth'), '--images', str(tmp_path / 'images'),
                                 '--out', str(tmp_path / 'o')])


def test_shown_detections_threshold_and_best_guesses():
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from sdae_suite.visualize.predictions import shown_detections

    sample = DetDataSample()
    sample.pred_instances = InstanceData(scores=torch.tensor([0.9, 0.05, 0.2, 0.4]), labels=torch.tensor([0, 1, 2, 3]),
                                         bboxes=torch.zeros(4, 4))
    assert sorted(shown_detections(sample, 0.3, 0).pred_instances.scores.tolist()) == pytest.approx([0.4, 0.9])
    best = shown_detections(sample, 0.3, 3).pred_instances
    assert sorted(best.labels.tolist()) == [0, 2, 3]  # the 3 best, though 0.2 is under the threshold
    assert len(shown_detections(sample, 0.95, 1).pred_instances) == 1
    assert len(sample.pred_instances) == 4  # the prediction itself is left as the test scored it


def test_fine_tuning_runs_add_tensorboard_once():
    from mmengine.config import Config

    from sdae_suite.commands.train import add_tensorboard

    cfg = Config(dict(visualizer=dict(type='DetLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')])))
    add_tensorboard(cfg)
    add_tensorboard(cfg)
    assert [b['type'] for b in cfg.visualizer.vis_backends] == ['LocalVisBackend', 'TensorboardVisBackend']
    pretrain = Config.fromfile(str(Path(__file__).resolve().parents[1] / 'pretrain/configs/_base_/default_runtime.py'))
    assert [b['type'] for b in pretrain.visualizer.vis_backends] == ['LocalVisBackend', 'TensorboardVisBackend']


def test_one_column_per_task_and_init_lowest_seed_first(tmp_path):
    from sdae_suite.visualize.predictions import find_tested_runs

    def run(name: str, task: str, pretrained: str | None, status: str = 'ok', ckpt: bool = True) -> None:
        d = tmp_path / 'finetune' / name
        d.mkdir(parents=True)
        (d / 'recipe.py').write_text('x = 1\n')
        if ckpt:
            (d / 'iter_4.pth').write_bytes(b'0')
        meta = {'method': 'sdae', 'epoch': 6, 'branch': 'student'} if pretrained else None
        (d / 'test_results.json').write_text(json.dumps({
            'task': task, 'recipe': 'recipe', 'checkpoint': str(d / 'iter_4.pth'), 'pretrained': pretrained,
            'pretrained_meta': meta, 'status': status}))

    run('det_sdae_seed1', 'det', 'b.pth')
    run('det_sdae_seed0', 'det', 'b.pth')
    run('det_random_seed0', 'det', None)
    run('seg_random_seed0', 'seg', None, status='failed')
    run('seg_sdae_seed0', 'seg', 'b.pth', ckpt=False)
    runs, notes = find_tested_runs([tmp_path / 'finetune'])
    assert [(r.task, r.label, r.path.name) for r in runs] == [('det', 'sdae 6ep student', 'det_sdae_seed0'),
                                                              ('det', 'random init', 'det_random_seed0')]
    assert any("seg_random_seed0/test_results.json: status 'failed'" in n for n in notes)
    assert any('seg_sdae_seed0: checkpoint' in n and 'is missing' in n for n in notes)
