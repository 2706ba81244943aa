"""The pretraining configs are what their headers say: the official SdAE objective, teacher, weight decay and lr
schedule (github.com/AbrahamYabo/SdAE), checked against values worked out here independently of the implementation."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS

import sdae_suite.backbones  # noqa: F401
import sdae_suite.pretrain  # noqa: F401  (registers the scheduler and the optimizer constructor)
from sdae_suite.backbones.vit import sincos_pos_embed_2d
from sdae_suite.commands.pretrain import derive, load_config, parse_args
from sdae_suite.pretrain import model as model_module
from sdae_suite.pretrain.masking import plan_masks
from sdae_suite.pretrain.model import MaskedPretrainer, cosine_loss

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'pretrain' / 'configs'
OFFICIAL = CONFIGS / 'sdae_vit-base-p16_300e_in1k.py'
PAPER = CONFIGS / 'sdae_vit-base-p16_300e_in1k_paper-cosine.py'
RECIPES = sorted(CONFIGS.glob('*.py'))
SMALL = dict(encoder=dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, drop_path_rate=0.0),
             decoder=dict(embed_dim=32, depth=1, num_heads=2))


def model_from(config: Path, **overrides) -> MaskedPretrainer:
    """The config's model section, shrunk to CPU size (the settings under test do not depend on the size)."""
    cfg = copy.deepcopy(Config.fromfile(str(config)).model.to_dict())
    cfg.pop('type')
    for key, value in {**SMALL, **overrides}.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    torch.manual_seed(0)
    return MaskedPretrainer(**cfg)


# ---- the loss ----------------------------------------------------------------------------------------------------
# One image, 6 masked tokens in K = 2 folds of n = 3, D = 4 channels: as the official code shapes it, [B*K, n, D] =
# [2, 3, 4]. The two axes give different losses on it.
PRED = np.array([[[1, 0, 2, -1], [0, 1, 1, 2], [2, -1, 0, 1]],
                 [[1, 1, 0, 0], [-1, 2, 1, 0], [0, 0, 1, 3]]], dtype=np.float64)
TARGET = np.array([[[1, 1, 2, 0], [0, 2, -1, 1], [1, -1, 0, 2]],
                   [[2, 0, 1, 1], [-1, 1, 0, 1], [1, 0, 2, 1]]], dtype=np.float64)
# By hand, cos = <p, t> / sqrt(|p|^2 |t|^2).
# 'tokens' (official): per fold f and channel c, over the 3 tokens. Fold 0: dots 3, 3, 3, 4; |p|^2 5, 2, 5, 6;
# |t|^2 2, 6, 5, 5. Fold 1: dots 3, 2, 2, 3; |p|^2 2, 5, 2, 9; |t|^2 6, 1, 5, 3.
COS_TOKENS = [3 / math.sqrt(10), 3 / math.sqrt(12), 3 / 5, 4 / math.sqrt(30),
              3 / math.sqrt(12), 2 / math.sqrt(5), 2 / math.sqrt(10), 3 / math.sqrt(27)]
# 'channels' (paper text): per token over the 4 channels. Fold 0: dots 5, 3, 5; |p|^2 6, 6, 6; |t|^2 6, 6, 6.
# Fold 1: dots 2, 3, 5; |p|^2 2, 6, 10; |t|^2 6, 3, 6.
COS_CHANNELS = [5 / 6, 3 / 6, 5 / 6, 2 / math.sqrt(12), 3 / math.sqrt(18), 5 / math.sqrt(60)]
LOSS_TOKENS = 0.2355920199  # 1 - mean(COS_TOKENS)
LOSS_CHANNELS = 0.3172298431  # 1 - mean(COS_CHANNELS)


def test_loss_on_hand_built_folds_token_axis_vs_channel_axis():
    assert 1 - np.mean(COS_TOKENS) == pytest.approx(LOSS_TOKENS, abs=1e-10)
    assert 1 - np.mean(COS_CHANNELS) == pytest.approx(LOSS_CHANNELS, abs=1e-10)
    # the same numbers with numpy over the axes, as the official [B*K, n, D] layout reads them
    dot_tokens = (PRED * TARGET).sum(axis=1) / (np.linalg.norm(PRED, axis=1) * np.linalg.norm(TARGET, axis=1))
    dot_channels = (PRED * TARGET).sum(axis=2) / (np.linalg.norm(PRED, axis=2) * np.linalg.norm(TARGET, axis=2))
    np.testing.assert_allclose(dot_tokens.reshape(-1), COS_TOKENS, rtol=1e-12)
    np.testing.assert_allclose(dot_channels.reshape(-1), COS_CHANNELS, rtol=1e-12)

    # ours: [B, M, D] in ids_masked order (fold f = tokens 3f .. 3f + 2)
    pred = torch.tensor(PRED, dtype=torch.float32).reshape(1, 6, 4)
    target = torch.tensor(TARGET, dtype=torch.float32).reshape(1, 6, 4)
    assert cosine_loss(pred, target, (3, 3), 'tokens').item() == pytest.approx(LOSS_TOKENS, abs=1e-6)
    assert cosine_loss(pred, target, (3, 3), 'channels').item() == pytest.approx(LOSS_CHANNELS, abs=1e-6)
    # and the official expression, literally (engine_pretrain.py: 1 - F.cosine_similarity(teacher, outputs).mean())
    official = 1 - F.cosine_similarity(torch.tensor(TARGET), torch.tensor(PRED)).mean()
    assert official.item() == pytest.approx(LOSS_TOKENS, abs=1e-10)


def official_teacher_forward(teacher, imgs: torch.Tensor, ids_unkeep: torch.Tensor, folds: int) -> torch.Tensor:
    """models_teacher.py ``forward_teachers`` (shrink_num = all masked, ncrop_loss = folds), line by line."""
    b = imgs.shape[0]
    x = teacher.patch_embed(imgs)
    x = x + teacher.pos_embed[:, 1:, :]
    x = torch.gather(x, dim=1, index=ids_unkeep.unsqueeze(-1).repeat(1, 1, x.shape[2]))
    x = x.reshape(b * folds, x.shape[1] // folds, x.shape[2])
    cls_token = teacher.cls_token + teacher.pos_embed[:, :1, :]
    x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
    for blk in teacher.blocks:
        x = blk(x)
    return teacher.norm(x)[:, 1:, :]


@pytest.mark.parametrize('config, official_axis', [(OFFICIAL, True), (PAPER, False)])
def test_config_loss_equals_the_official_engine_computation(config, official_axis, monkeypatch):
    model = model_from(config).eval()
    assert model.teacher_init == 'official' and model.num_folds == 3
    g = torch.Generator().manual_seed(3)
    imgs = torch.randn(2, 3, 32, 32, generator=g)
    plan = plan_masks(2, 16, 0.75, 3, generator=g)  # 12 masked -> 3 folds of 4
    monkeypatch.setattr(model_module, 'plan_masks', lambda *a, **k: plan)
    with torch.no_grad():
        got = model.loss(imgs)['loss'].item()

        teacher = official_teacher_forward(model.teacher, imgs, plan.ids_masked, 3)  # [B*K, n, D]
        mean, var = teacher.mean(dim=-1, keepdim=True), teacher.var(dim=-1, keepdim=True)  # torch.var: unbiased
        teacher = (teacher - mean) / (var + 1.e-6) ** .5
        tokens, grid = model.encoder.embed(imgs)
        outputs = model.decoder(model.encoder.forward_subset(tokens, plan.ids_keep), plan, grid)  # gathered by ids
        outputs = outputs.reshape(teacher.shape)
        official = (1 - F.cosine_similarity(teacher, outputs).mean()).item()
        per_token = (1 - F.cosine_similarity(teacher, outputs, dim=-1).mean()).item()
    assert abs(official - per_token) > 1e-3  # the two readings are different objectives on this batch
    assert got == pytest.approx(official if official_axis else per_token, abs=1e-6)


def test_full_teacher_view_with_token_axis_is_refused():
    with pytest.raises(ValueError, match="teacher_view='full' needs cos_dim='channels'"):
        model_from(OFFICIAL, teacher_view='full')
    model = model_from(OFFICIAL, teacher_view='full', cos_dim='channels')  # the official full-view loss
    assert model(torch.randn(2, 3, 32, 32), mode='loss')['loss'].ndim == 0
    with pytest.raises(ValueError, match="teacher_init='random' is ambiguous"):
        model_from(OFFICIAL, teacher_init='random')


# ---- the teacher -------------------------------------------------------------------------------------------------
def within_one_std(x: torch.Tensor) -> float:
    return (x.abs() < x.std()).float().mean().item()


def test_official_teacher_init_statistics():
    # 192-d, 16 px patches: 197 x 192 position table, 576 x 192 qkv, patch conv fan_in 3 * 16 * 16 = 768.
    model = model_from(OFFICIAL, encoder=dict(img_size=224, patch_size=16, embed_dim=192, depth=2, num_heads=3))
    t = model.teacher
    # Expected, from the official init (timm 0.3.2 VisionTransformer + torch's Conv2d default), worked out here:
    # trunc_normal(std .02, cut at +-2): std .02, normal shape (68.3 % within one std).
    # kaiming_uniform(a=sqrt(5)) on the conv: U(-b, b) with b = 1/sqrt(fan_in), std b/sqrt(3) = 1/sqrt(3 fan_in),
    # uniform shape (1/sqrt(3) = 57.7 % within one std); bias U(-b, b).
    fan_in = 3 * 16 * 16
    bound = 1 / math.sqrt(fan_in)
    for name in ('pos_embed', 'blocks.0.attn.qkv.weight', 'blocks.1.mlp.fc2.weight'):
        p = t.get_parameter(name)
        assert p.std().item() == pytest.approx(0.02, rel=0.03), name
        assert abs(p.mean().item()) < 1e-3, name
        assert within_one_std(p) == pytest.approx(0.6827, abs=0.01), name
    assert t.cls_token.std().item() == pytest.approx(0.02, rel=0.2)
    conv = t.patch_embed.proj
    assert conv.weight.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.03)
    assert conv.weight.abs().max().item() <= bound and conv.weight.abs().max().item() > 0.99 * bound
    assert within_one_std(conv.weight) == pytest.approx(1 / math.sqrt(3), abs=0.01)
    assert conv.bias.abs().max().item() <= bound and conv.bias.std().item() > 0.5 * bound / math.sqrt(3)
    for name, p in t.named_parameters():
        if name.endswith('.bias') and 'patch_embed' not in name:
            assert torch.equal(p, torch.zeros_like(p)), name
        if 'norm' in name and name.endswith('.weight'):
            assert torch.equal(p, torch.ones_like(p)), name
    # The student keeps MAE's init: fixed sin-cos table, xavier linears (std sqrt(2 / (192 + 576)) = .051).
    torch.testing.assert_close(model.encoder.pos_embed, sincos_pos_embed_2d(192, (14, 14)))
    assert model.encoder.blocks[0].attn.qkv.weight.std().item() == pytest.approx(math.sqrt(2 / 768), rel=0.03)
    # 'mae' teacher: an independent draw of the student's init (the behaviour 'random' had before)
    mae = model_from(OFFICIAL, teacher_init='mae').teacher
    torch.testing.assert_close(mae.pos_embed, sincos_pos_embed_2d(32, (4, 4)))


def test_official_teacher_position_table_is_pulled_to_sincos_by_the_ema():
    from sdae_suite.pretrain.hooks import ema_update

    model = model_from(OFFICIAL)
    t0 = model.teacher.pos_embed.detach().clone()
    sincos = model.encoder.pos_embed.detach()
    assert not torch.allclose(t0, sincos)
    assert 'pos_embed' in model.teacher.state_dict() and not model.teacher.pos_embed.requires_grad
    wrapper = build_optim_wrapper(model, dict(type='OptimWrapper', constructor='PretrainOptimWrapperConstructor',
                                              optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.04)))
    assert not {id(model.teacher.pos_embed)} & {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}
    for _ in range(3):
        ema_update(model.teacher, model.encoder, 0.96)
    torch.testing.assert_close(model.teacher.pos_embed, 0.96 ** 3 * t0 + (1 - 0.96 ** 3) * sincos)


# ---- weight decay ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('config', RECIPES, ids=[p.stem for p in RECIPES])
def test_weight_decay_groups_as_official(config):
    cfg = Config.fromfile(str(config))
    model = model_from(config)
    wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper.to_dict()))
    wd = cfg.optim_wrapper.optimizer.weight_decay
    group_of = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups for p in g['params']}
    # timm 0.3.2 add_weight_decay(model, wd) as official SdAE and MAE call it: frozen parameters skipped; no decay
    # for 1-D parameters and biases; everything else decayed (its skip list is empty).
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert id(p) not in group_of, name
        else:
            assert group_of[id(p)] == (0.0 if p.ndim == 1 or name.endswith('.bias') else wd), name
    assert group_of[id(model.encoder.cls_token)] == wd == 0.04
    assert group_of[id(model.decoder.mask_token)] == wd
    assert id(model.encoder.pos_embed) not in group_of and id(model.decoder.pos_embed) not in group_of


# ---- lr schedule -------------------------------------------------------------------------------------------------
def official_lr(it: int, per_epoch: int, lr: float, warmup: int, epochs: int) -> float:
    """util/lr_sched.py adjust_learning_rate(optimizer, data_iter_step / len(data_loader) + epoch, args)."""
    epoch = it / per_epoch
    if epoch < warmup:
        return lr * epoch / warmup
    return lr * 0.5 * (1. + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))


@pytest.mark.parametrize('config', RECIPES, ids=[p.stem for p in RECIPES])
def test_lr_warms_up_from_zero_and_peaks_at_the_end_of_warmup(config):
    args = parse_args([str(config)])
    cfg = load_config(args)
    derive(cfg, args)
    lr, warmup, epochs, per_epoch = cfg.optim_wrapper.optimizer.lr, cfg.warmup_epochs, cfg.train_cfg.max_epochs, 3
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    schedulers = [PARAM_SCHEDULERS.build(dict(s), default_args=dict(optimizer=opt, epoch_length=per_epoch))
                  for s in cfg.param_scheduler]
    got = []
    for _ in range(epochs * per_epoch):  # the Runner's order: the lr of iteration i is set before it runs
        got.append(opt.param_groups[0]['lr'])
        opt.step()
        for s in schedulers:
            s.step()
    end = warmup * per_epoch
    assert got[0] == 0.0
    assert got[end - 1] == pytest.approx(lr * (end - 1) / end, rel=1e-9)
    assert got[end] == pytest.approx(lr, rel=1e-9) and max(got) == pytest.approx(lr, rel=1e-9)
    np.testing.assert_allclose(got, [official_lr(i, per_epoch, lr, warmup, epochs) for i in range(len(got))],
                               rtol=1e-7, atol=1e-12 * lr)


# ---- headers -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('config', RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_opens_with_its_source_and_deviation_table(config):
    header = config.read_text().split('_base_ =', 1)[0]
    assert 'github.com/' in header and 'Source' in header
    assert '| what' in header and '| why' in header


def test_official_config_states_the_official_settings():
    cfg = Config.fromfile(str(OFFICIAL))
    m = cfg.model
    assert (m.cos_dim, m.teacher_init, m.teacher_view, m.num_folds, m.mask_ratio) == ('tokens', 'official', 'folds',
                                                                                      3, 0.75)
    assert cfg.train_dataloader.drop_last is True and cfg.train_dataloader.batch_size == 96
    assert cfg.optim_wrapper.optimizer.betas == (0.9, 0.95) and cfg.blr == 2.666e-4
    (ema,) = [h for h in cfg.custom_hooks if h['type'] == 'EMATeacherHook']
    assert (ema['momentum'], ema['end_momentum'], ema['by_epoch']) == (0.96, 0.99, True)
    assert Config.fromfile(str(PAPER)).model.cos_dim == 'channels'
