"""The full recipe configs against their sources: the total batch on a simulated 8-GPU world, the weight-decay groups
(per source rule, restated here from the source code) with the lr multipliers, the CAE protocol's neck / heads /
proposals / warmup / positions, and the source + deviation table every recipe config opens with."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config

import sdae_suite.backbones  # noqa: F401  (registers SdAEViT & co.)
from sdae_suite.backbones.layer_decay import LayerDecayConstructor
from sdae_suite.engine.hooks.recipe_batch import RecipeBatchError, SdAERecipeBatchHook, check_effective_batch

ROOT = Path(__file__).resolve().parents[1]
CAE = 'det_configs/sdae_maskrcnn.py'
VITDET = 'det_configs/sdae_vitdet_maskrcnn_100e.py'
SEG = 'seg_configs/sdae_upernet.py'
DEMOS = ['det_configs/sdae_maskrcnn_demo.py', 'det_configs/sdae_vitdet_maskrcnn_demo.py',
         'seg_configs/sdae_upernet_demo.py']


def _cfg(path: str) -> Config:
    return Config.fromfile(str(ROOT / path))


# ---- total batch ------------------------------------------------------------------------------------------------
def _hook_batch(cfg: Config) -> int:
    (hook,) = [h for h in cfg.custom_hooks if h['type'] == 'SdAERecipeBatchHook']
    return hook['batch_size']


def test_vitdet_total_batch_on_a_simulated_world_of_8():
    cfg = _cfg(VITDET)
    assert _hook_batch(cfg) == 64 and cfg.auto_scale_lr == dict(enable=False, base_batch_size=64)
    # as configured (4 per GPU, the source's 16-GPU setting) 8 GPUs would train at 32: refused, the fix named
    with pytest.raises(RecipeBatchError, match=r'train at 32 .*train_dataloader\.batch_size=8 \(64 / 8 processes\)'):
        check_effective_batch(cfg, world_size=8, recipe_batch=64)
    # the hook runs the same check on the runner (before the weights are loaded and any training step)
    runner = SimpleNamespace(cfg=cfg, world_size=8)
    with pytest.raises(RecipeBatchError, match='batch_size=8'):
        SdAERecipeBatchHook(batch_size=64).before_run(runner)
    assert 'the recipe batch' in check_effective_batch(cfg, world_size=16, recipe_batch=64)
    fixed = _cfg(VITDET)
    fixed.merge_from_dict({'train_dataloader.batch_size': 8})
    assert check_effective_batch(fixed, 8, 64) == 'total batch 64 = 8 processes x 8: the recipe batch'
    SdAERecipeBatchHook(batch_size=64).before_run(SimpleNamespace(cfg=fixed, world_size=8))
    # opting into mmengine's linear lr scaling runs at 32, logged as a deviation (lr x 0.5, schedule unchanged)
    scaled = _cfg(VITDET)
    scaled.merge_from_dict({'auto_scale_lr.enable': True})
    assert check_effective_batch(scaled, 8, 64).startswith('DEVIATION from the recipe: total batch 32')
    assert 'scales the lr by 0.5' in check_effective_batch(scaled, 8, 64)
    with pytest.raises(RecipeBatchError, match='base_batch_size=64'):
        scaled.merge_from_dict({'auto_scale_lr.base_batch_size': 16})
        check_effective_batch(scaled, 8, 64)


def test_mmengine_scales_the_lr_by_the_same_arithmetic():
    """With auto_scale_lr enabled, mmengine's Runner.scale_lr on 8 processes x 4 gives lr x 32 / 64."""
    from mmengine.optim import OptimWrapper
    from mmengine.runner import Runner

    cfg = _cfg(VITDET)
    wrapper = OptimWrapper(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4))
    fake = SimpleNamespace(_train_dataloader=cfg.train_dataloader, world_size=8, param_schedulers=cfg.param_scheduler,
                           logger=SimpleNamespace(info=lambda *a, **k: None))
    Runner.scale_lr(fake, wrapper, dict(enable=True, base_batch_size=64))
    assert wrapper.param_groups[0]['lr'] == pytest.approx(0.5e-4)


@pytest.mark.parametrize('config, recipe_batch', [(CAE, 32), (SEG, 16)])
def test_other_recipes_keep_their_total_batch_on_8_gpus(config, recipe_batch):
    cfg = _cfg(config)
    assert _hook_batch(cfg) == recipe_batch and cfg.auto_scale_lr.base_batch_size == recipe_batch
    assert 'the recipe batch' in check_effective_batch(cfg, 8, recipe_batch)
    with pytest.raises(RecipeBatchError, match=f'batch_size={recipe_batch // 4} '):  # on 4 GPUs
        check_effective_batch(cfg, 4, recipe_batch)


@pytest.mark.parametrize('config', DEMOS)
def test_demos_do_not_enforce_a_total_batch(config):
    assert not any(h['type'] == 'SdAERecipeBatchHook' for h in _cfg(config).get('custom_hooks', []))


# ---- weight-decay groups and lr multipliers ---------------------------------------------------------------------
TINY_VIT = dict(embed_dim=32, num_heads=2)


def _small_model(config: str):
    """The config's model with a narrow (32-d) but full-depth ViT, so the parameter names are the recipe's."""
    from mmengine.registry import init_default_scope

    cfg = _cfg(config)
    cfg.model.backbone.update(TINY_VIT)
    if config == SEG:
        cfg.model.neck.embed_dim = 32
        cfg.model.decode_head.update(in_channels=[32] * 4, channels=16)
        cfg.model.auxiliary_head.update(in_channels=32, channels=16)
    elif config == CAE:
        cfg.model.neck[0].embed_dim = 32
        cfg.model.neck[1].in_channels = [32] * 4
    else:
        cfg.model.neck.in_channels = 32
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    return cfg, MODELS.build(cfg.model)


def _beit_no_decay(name: str, p: torch.Tensor) -> bool:
    """BEiT's / CAE's / mmseg's constructor, as written (full parameter names)."""
    return len(p.shape) == 1 or name.endswith('.bias') or name in ('pos_embed', 'cls_token')


def _mmdet_vitdet_no_decay(name: str, p: torch.Tensor) -> bool:
    """mmdet projects/ViTDet LayerDecayOptimizerConstructor, as written."""
    return (name.startswith('backbone.blocks') and 'norm' in name) or 'pos_embed' in name


def _source_layer_id(name: str) -> int:
    """BEiT / CAE / mmseg get_layer_id_for_vit and mmdet ViTDet's, with num_layers 12 (the same ids)."""
    if name in ('backbone.cls_token', 'backbone.mask_token', 'backbone.pos_embed') or \
            name.startswith('backbone.patch_embed'):
        return 0
    if name.startswith('backbone.blocks.'):
        return int(name.split('.')[2]) + 1
    return 13


@pytest.mark.parametrize('config, rule, decay_rate', [(CAE, _beit_no_decay, 0.75), (SEG, _beit_no_decay, 0.65),
                                                      (VITDET, _mmdet_vitdet_no_decay, 0.7)],
                         ids=['cae', 'mmseg-mae', 'mmdet-vitdet'])
def test_weight_decay_groups_follow_each_source(config, rule, decay_rate):
    cfg, model = _small_model(config)
    ow = cfg.optim_wrapper
    assert ow.paramwise_cfg.layer_decay_rate == decay_rate
    wrapper = LayerDecayConstructor(dict(type='OptimWrapper', optimizer=ow.optimizer), ow.paramwise_cfg)(model)
    where = {id(p): g for g in wrapper.optimizer.param_groups for p in g['params']}
    wd, lr = ow.optimizer.weight_decay, ow.optimizer.lr
    named = dict(model.named_parameters())
    for name, p in named.items():
        if not p.requires_grad:
            assert id(p) not in where, name
            continue
        g = where[id(p)]
        assert g['weight_decay'] == (0.0 if rule(name, p) else wd), name
        assert g['lr'] == pytest.approx(lr * decay_rate ** (13 - _source_layer_id(name)), rel=1e-9), name
    decayed = {n for n, p in named.items() if id(p) in where and where[id(p)]['weight_decay'] > 0}
    exempt = {n for n, p in named.items() if id(p) in where and where[id(p)]['weight_decay'] == 0}
    if config == SEG:  # mmseg MAE as run: position table, cls token and relative position bias tables decay
        assert {'backbone.pos_embed', 'backbone.cls_token', 'backbone.blocks.0.rel_pos.table'} <= decayed
        assert 'backbone.blocks.0.norm1.weight' in exempt and 'backbone.blocks.0.attn.qkv.bias' in exempt
    elif config == CAE:  # CAE as run: cls token decays; its sin-cos position table is frozen (no group)
        assert 'backbone.cls_token' in decayed and not named['backbone.pos_embed'].requires_grad
        assert {'neck.1.lateral_convs.0.conv.bias', 'roi_head.bbox_head.shared_convs.0.bn.weight'} <= exempt
    else:  # mmdet ViTDet: biases, rel-pos tables and neck/head norms decay; block norms and pos_embed do not
        assert {'backbone.blocks.0.attn.qkv.bias', 'backbone.blocks.0.attn.rel_pos_h', 'backbone.patch_embed.proj.bias',
                'neck.stages.0.4.1.weight', 'roi_head.bbox_head.shared_convs.0.ln.weight'} <= decayed
        assert exempt == {n for n in named if n.startswith('backbone.blocks.') and '.norm' in n} | {
            'backbone.pos_embed'}


# ---- CAE protocol -----------------------------------------------------------------------------------------------
def test_cae_protocol_neck_heads_proposals_warmup_positions():
    cfg = _cfg(CAE)
    m = cfg.model
    f2p, fpn = m.neck
    assert f2p.type == 'mmseg.Feature2Pyramid' and f2p.norm_cfg.type == 'BN'  # CAE: SyncBN in the x4 branch
    assert 'norm_cfg' not in fpn  # CAE's FPN has no norm
    assert m.roi_head.bbox_head.type == 'Shared4Conv1FCBBoxHead' and m.roi_head.bbox_head.norm_cfg.type == 'BN'
    assert m.roi_head.bbox_head.loss_bbox == dict(type='GIoULoss', loss_weight=10.0)
    assert 'norm_cfg' not in m.roi_head.mask_head  # CAE's FCN mask head has no norm
    assert (m.train_cfg.rpn_proposal.nms_pre, m.train_cfg.rpn_proposal.max_per_img) == (2000, 2000)
    assert (m.test_cfg.rpn.nms_pre, m.test_cfg.rpn.max_per_img) == (1000, 1000)
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end, warmup.by_epoch) == ('LinearLR', 0.001, 500, False)
    assert steps.milestones == [9, 11] and cfg.train_cfg.max_epochs == 12
    assert m.backbone.freeze_pos_embed and tuple(m.backbone.img_size) == (672, 1092)
    assert cfg.optim_wrapper.paramwise_cfg.decay_rule == 'beit'
    vitdet = _cfg(VITDET)  # inherits from the CAE config: ViTDet's own values must come back
    assert vitdet.model.train_cfg.rpn_proposal.max_per_img == 1000
    assert not vitdet.model.backbone.freeze_pos_embed and vitdet.model.backbone.img_size == 224
    assert vitdet.model.roi_head.mask_head.norm_cfg.type == 'SdAELN2d'


# ---- headers ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('config', [CAE, VITDET, SEG, *DEMOS])
def test_every_recipe_config_opens_with_its_source_and_a_deviation_table(config):
    text = (ROOT / config).read_text()
    header = text[:re.search(r'^_base_ = ', text, re.M).start()]
    assert re.search(r'^# SOURCE: .*(github\.com/\S+|\.py)', header, re.M), 'no source line'
    assert re.search(r'^# Deviations? .*\| reason$', header, re.M) or \
        re.search(r'^# Deliberate deviations from the source\s+\| reason$', header, re.M), 'no deviation table'
    rows = [line for line in header.splitlines() if re.match(r'^# \S.*\|', line) and 'reason' not in line]
    assert len(rows) >= 2, 'the deviation table is empty'
