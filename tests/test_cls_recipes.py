"""The ImageNet-1K classification recipes (cls_configs/) against the official code they cite: MAE's / official SdAE's
``main_finetune.py``, ``main_linprobe.py``, ``models_vit.py``, ``util/lr_decay.py``, ``util/lars.py``,
``util/lr_sched.py``, ``util/crop.py`` and ``util/datasets.py`` (the SdAE repo's util files are byte-identical to
facebookresearch/mae's). Each official rule is restated by hand below (``mae_*``), from the source, and the suite's
implementation -- built through mmengine from the configs, as a run builds it -- is compared
with it: layer-decay groups, transforms, fine-tuning steps, LARS, the lr schedule, linear probing's frozen encoder,
resume, checkpoint layouts, the metric, and the config headers that cite this file.
"""
from __future__ import annotations

import copy
import json
import math
import random
import re
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.optim import build_optim_wrapper
from mmengine.registry import HOOKS, MODELS, PARAM_SCHEDULERS
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Mixup, create_transform
from timm.data import auto_augment as timm_aa
from timm.data.auto_augment import RandAugment
from timm.loss import SoftTargetCrossEntropy
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import nn
from torchvision import transforms as T

import sdae_suite.backbones  # noqa: F401  (LayerDecayConstructor)
import sdae_suite.classification  # noqa: F401  (SdAEImageClassifier, MAELARS, SdAEImageFolder, SdAETopKAccuracy)
import sdae_suite.engine  # noqa: F401  (LinearWarmupFromZeroLR, FiniteGradOptimWrapper, the hooks)
from sdae_suite.backbones.pretrained import CheckpointMismatchError
from sdae_suite.backbones.vit import VisionTransformer
from sdae_suite.classification import model as model_module
from sdae_suite.classification.lars import MAELARS
from sdae_suite.classification.transforms import (
    POSTERIZE_OPS,
    MAERandomResizedCrop,
    build_transform,
    posterize_zero_bits_safe,
)
from sdae_suite.commands import train as train_tool
from sdae_suite.contracts import BACKBONE_FORMAT
from sdae_suite.engine.atomic import atomic_torch_save
from sdae_suite.engine.checkpoint_io import safe_torch_load
from sdae_suite.engine.hooks.recipe_batch import RecipeBatchError, SdAERecipeBatchHook, check_effective_batch

ROOT = Path(__file__).resolve().parents[1]
FT = 'cls_configs/sdae_vit-base-p16_8xb128-ft-100e_in1k.py'
LIN = 'cls_configs/sdae_vit-base-p16_8xb512-accum4-linear-90e_in1k.py'
FT_DEMO = 'cls_configs/sdae_vit-tiny-p8_1xb64-ft_demo.py'
LIN_DEMO = 'cls_configs/sdae_vit-tiny-p8_1xb32-linear_demo.py'
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # main_linprobe.py's literals (= timm's IMAGENET_DEFAULT_*)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: multi-threaded CPU kernels are not bit-reproducible (1e-7 apart run to run), and on a busy
    2-core machine two threads spin against each other (a fine-tuning step 50x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(path: str) -> Config:
    return Config.fromfile(str(ROOT / path))


def _cpu_optim_wrapper(cfg: Config) -> dict:
    """The config's optim_wrapper (constructor, paramwise_cfg, optimizer, accumulation) with a plain OptimWrapper:
    mmengine's AmpOptimWrapper refuses to be built without CUDA (tools/train.py makes the same swap on CPU)."""
    ow = copy.deepcopy(cfg.optim_wrapper.to_dict())
    ow['type'] = 'OptimWrapper'
    ow.pop('loss_scale', None)
    return ow


def _schedulers(cfg: Config, optim_wrapper, epoch_length: int) -> list:
    """The config's param_scheduler built as mmengine's Runner builds it (``Runner._build_param_scheduler``)."""
    return [PARAM_SCHEDULERS.build(copy.deepcopy(s), default_args=dict(optimizer=optim_wrapper,
                                                                         epoch_length=epoch_length))
            for s in cfg.param_scheduler]


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _official(name: str) -> str:
    """Our parameter name -> models_vit.VisionTransformer's (the encoder sits under ``backbone.``; fc_norm, head)."""
    return name.removeprefix('backbone.')


# ---- the official rules, restated from the source -----------------------------------------------------------------
# models_vit.VisionTransformer is timm's; its no_weight_decay() is {'pos_embed', 'cls_token'} (main_finetune.py passes
# it as no_weight_decay_list)
MAE_NO_WEIGHT_DECAY = {'pos_embed', 'cls_token'}


def mae_layer_id(name: str, num_layers: int) -> int:
    """util/lr_decay.get_layer_id_for_vit."""
    if name in ('cls_token', 'pos_embed'):
        return 0
    if name.startswith('patch_embed'):
        return 0
    if name.startswith('blocks'):
        return int(name.split('.')[1]) + 1
    return num_layers


def mae_param_groups_lrd(named_params, num_blocks: int, weight_decay: float = 0.05,
                         no_weight_decay_list=MAE_NO_WEIGHT_DECAY, layer_decay: float = 0.75) -> list[dict]:
    """util/lr_decay.param_groups_lrd (with the parameter names kept per group): num_layers = blocks + 1, scale of
    layer i = layer_decay ** (num_layers - i); no weight decay for 1-D tensors and the no_weight_decay_list."""
    num_layers = num_blocks + 1
    layer_scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    groups: dict[str, dict] = {}
    for n, p in named_params:
        if not p.requires_grad:
            continue
        if p.ndim == 1 or n in no_weight_decay_list:
            g_decay, this_decay = 'no_decay', 0.0
        else:
            g_decay, this_decay = 'decay', weight_decay
        layer_id = mae_layer_id(n, num_layers)
        key = f'layer_{layer_id}_{g_decay}'
        if key not in groups:
            groups[key] = dict(lr_scale=layer_scales[layer_id], weight_decay=this_decay, params=[], names=[])
        groups[key]['params'].append(p)
        groups[key]['names'].append(n)
    return list(groups.values())


def mae_lr(epoch: float, lr: float, min_lr: float, warmup_epochs: float, epochs: float) -> float:
    """util/lr_sched.adjust_learning_rate (before the lr_scale of each group); epoch = it / iters_per_epoch + epoch."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))


def mae_crop_params(img: Image.Image, scale, ratio) -> tuple[int, int, int, int]:
    """util/crop.RandomResizedCrop.get_params: ONE draw of area and log-ratio, the size clipped to the image, no retry
    loop and no centre-crop fallback."""
    width, height = img.size
    area = height * width
    target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
    log_ratio = torch.log(torch.tensor(ratio))
    aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
    w = int(round(math.sqrt(target_area * aspect_ratio)))
    h = int(round(math.sqrt(target_area / aspect_ratio)))
    w = min(w, width)
    h = min(h, height)
    i = torch.randint(0, height - h + 1, size=(1,)).item()
    j = torch.randint(0, width - w + 1, size=(1,)).item()
    return i, j, h, w


class MAECropReference(T.RandomResizedCrop):
    """util/crop.RandomResizedCrop: torchvision's crop with the one-draw get_params above."""

    @staticmethod
    def get_params(img, scale, ratio):
        return mae_crop_params(img, scale, ratio)


def mae_lars_step(p: torch.Tensor, grad: torch.Tensor, mu: torch.Tensor, lr: float, weight_decay: float = 0.0,
                  momentum: float = 0.9, trust_coefficient: float = 0.001) -> tuple[torch.Tensor, torch.Tensor]:
    """util/lars.LARS.step for one parameter, out of place: (new p, new momentum buffer)."""
    dp = grad
    if p.ndim > 1:  # not a norm's gamma / beta or a bias
        dp = dp + weight_decay * p
        param_norm, update_norm = torch.norm(p), torch.norm(dp)
        one = torch.ones_like(param_norm)
        q = torch.where(param_norm > 0.0,
                        torch.where(update_norm > 0, trust_coefficient * param_norm / update_norm, one), one)
        dp = dp * q
    mu = mu * momentum + dp
    return p - lr * mu, mu


# ---- 1. layer-decay parameter groups -----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def vitb_ft():
    """The ViT-B/16 fine-tuning config and its model (1000 classes), built by mmengine; random encoder."""
    cfg = _cfg(FT)
    torch.manual_seed(0)
    return cfg, MODELS.build(cfg.model)


def test_layer_decay_groups_are_mae_param_groups_lrd(vitb_ft):
    cfg, model = vitb_ft
    ow = cfg.optim_wrapper
    assert (ow.constructor, ow.paramwise_cfg.decay_rule, ow.paramwise_cfg.layer_decay_rate) == \
        ('LayerDecayConstructor', 'timm', 0.65)
    assert ow.optimizer.lr == pytest.approx(5e-4 * 1024 / 256, rel=1e-15) and ow.optimizer.lr == 2e-3
    wrapper = build_optim_wrapper(model, _cpu_optim_wrapper(cfg))
    opt = wrapper.optimizer
    # torch.optim.AdamW(param_groups, lr=args.lr): torch's defaults, the weight decay per group
    assert type(opt) is torch.optim.AdamW
    assert (opt.defaults['betas'], opt.defaults['eps'], opt.defaults['amsgrad']) == ((0.9, 0.999), 1e-8, False)

    named = dict(model.named_parameters())
    assert all(p.requires_grad for p in named.values())  # fine-tuning trains everything, pos_embed included
    ref = mae_param_groups_lrd([(_official(n), p) for n, p in named.items()], num_blocks=12, weight_decay=0.05,
                               layer_decay=0.65)
    ref_of = {n: g for g in ref for n in g['names']}
    where = {id(p): g for g in opt.param_groups for p in g['params']}
    assert sum(len(g['params']) for g in opt.param_groups) == len(where) == len(named)  # each parameter once
    for name, p in named.items():
        g, r = where[id(p)], ref_of[_official(name)]
        assert g['weight_decay'] == r['weight_decay'], name
        assert g['lr_scale'] == pytest.approx(r['lr_scale'], rel=1e-12), name
        assert g['lr'] == pytest.approx(2e-3 * r['lr_scale'], rel=1e-12), name
    # the same partition into groups: one per layer id and decay kind, 2 x 14 = 28
    ours = {frozenset(_official(n) for n in g['param_names']) for g in opt.param_groups}
    assert ours == {frozenset(g['names']) for g in ref} and len(ref) == 28
    # the rule in numbers (num_layers = 12 + 1; scale 0.65 ** (13 - layer id))
    for name, scale, wd in [('backbone.cls_token', 0.65 ** 13, 0.0), ('backbone.pos_embed', 0.65 ** 13, 0.0),
                            ('backbone.patch_embed.proj.weight', 0.65 ** 13, 0.05),
                            ('backbone.patch_embed.proj.bias', 0.65 ** 13, 0.0),
                            ('backbone.blocks.0.attn.qkv.weight', 0.65 ** 12, 0.05),
                            ('backbone.blocks.0.norm1.weight', 0.65 ** 12, 0.0),
                            ('backbone.blocks.11.mlp.fc2.weight', 0.65, 0.05),
                            ('backbone.blocks.11.mlp.fc2.bias', 0.65, 0.0),
                            ('fc_norm.weight', 1.0, 0.0), ('fc_norm.bias', 1.0, 0.0),
                            ('head.weight', 1.0, 0.05), ('head.bias', 1.0, 0.0)]:
        g = where[id(named[name])]
        assert (g['lr_scale'], g['weight_decay']) == (pytest.approx(scale, rel=1e-12), wd), name
    assert not any(n.startswith('backbone.norm.') for n in named)  # global pool: no final norm (models_vit del norm)


# ---- 2. transforms -------------------------------------------------------------------------------------------------
def _image(seed: int, size: tuple[int, int] = (300, 240)) -> Image.Image:
    """A textured RGB image (smooth gradients plus noise: every augmentation changes it)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8))


def _mae_finetune_transform():
    """util/datasets.build_transform(is_train=True) with main_finetune.py's arguments (SdAE's defaults)."""
    return create_transform(input_size=224, is_training=True, color_jitter=None, auto_augment='rand-m9-mstd0.5-inc1',
                            interpolation='bicubic', re_prob=0.25, re_mode='pixel', re_count=1,
                            mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)


def _same_attributes(a, b, skip=()) -> None:
    va, vb = vars(a), vars(b)
    assert set(va) == set(vb), (type(a).__name__, set(va) ^ set(vb))
    for k in va:
        if k in skip:
            continue
        x, y = va[k], vb[k]
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), (type(a).__name__, k)
        else:
            assert x == y, (type(a).__name__, k, x, y)


def test_finetune_train_transform_is_mae_create_transform():
    spec = _cfg(FT).train_dataloader.dataset.transform
    ours, ref = build_transform(spec), _mae_finetune_transform()
    assert repr(ours) == repr(ref)  # RRC bicubic (0.08, 1) (3/4, 4/3), flip, RandAugment m9 mstd 0.5 inc, erasing
    assert [type(t) for t in ours.transforms] == [type(t) for t in ref.transforms]
    for a, b in zip(ours.transforms, ref.transforms):
        if not isinstance(a, RandAugment):
            _same_attributes(a, b)
            continue
        assert (a.num_layers, a.choice_weights, len(a.ops)) == (b.num_layers, b.choice_weights, len(b.ops)) == \
            (2, None, 15)
        for oa, ob in zip(a.ops, b.ops):
            _same_attributes(oa, ob, skip=('aug_fn',))
            if oa.name in POSTERIZE_OPS:  # our only change: posterize to 0 bits gives black (test below)
                assert oa.aug_fn is posterize_zero_bits_safe and ob.aug_fn is timm_aa.posterize
            else:
                assert oa.aug_fn is ob.aug_fn
    # the same tensors for the same image under the same python / numpy / torch seeds
    compared = 0
    for seed in range(24):
        img = _image(seed % 3, [(300, 240), (240, 320), (500, 375)][seed % 3])
        _seed_all(seed)
        a = ours(img)
        _seed_all(seed)
        try:
            b = ref(img)
        except ValueError:  # Pillow >= 13 posterize to 0 bits (the plain timm op raises; ours gives black)
            continue
        assert a.shape == (3, 224, 224) and torch.equal(a, b), seed
        compared += 1
    assert compared >= 22


def test_posterize_to_zero_bits_gives_black_instead_of_raising():
    """RandAugment 'inc1' posterize keeps 4 - int(level / 10 * 4) bits: at the clipped magnitude 10 (m9 + gauss 0.5
    reaches it ~2 % of the draws) that is 0 bits, which Pillow 13's ImageOps.posterize refuses."""
    assert timm_aa._posterize_increasing_level_to_arg(10.0, {}) == (0,)
    assert timm_aa._posterize_increasing_level_to_arg(9.9, {}) == (1,)
    img = _image(0, (64, 48))
    ras = []
    for transform in (build_transform(_cfg(FT).train_dataloader.dataset.transform), _mae_finetune_transform()):
        ra = copy.deepcopy(next(t for t in transform.transforms if isinstance(t, RandAugment)))
        ra.ops = [op for op in ra.ops if op.name == 'PosterizeIncreasing']
        ra.ops[0].prob, ra.ops[0].magnitude, ra.ops[0].magnitude_std = 1.0, 10, 0.0  # 0 bits, every time
        ras.append(ra)
    ours, plain = ras
    out = ours(img)
    assert (out.mode, out.size) == (img.mode, img.size) and np.asarray(out).max() == 0
    with pytest.raises(ValueError, match='bits'):
        plain(img)
    with pytest.raises(ValueError, match='bits'):
        timm_aa.posterize(img, 0)
    # other bit counts are timm's posterize; timm's own op table is left alone
    for bits in (1, 4, 8):
        assert np.array_equal(np.asarray(posterize_zero_bits_safe(img, bits)), np.asarray(timm_aa.posterize(img, bits)))
    assert timm_aa.NAME_TO_OP['PosterizeIncreasing'] is timm_aa.posterize


def test_eval_transform_is_mae_resize_256_center_crop_224():
    ref = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                     T.Normalize(mean=MEAN, std=STD)])
    assert int(224 / (224 / 256)) == 256  # util/datasets.py: crop_pct 224 / 256 for input_size <= 224
    for config in (FT, LIN):
        ours = build_transform(_cfg(config).val_dataloader.dataset.transform)
        for k, size in enumerate([(500, 375), (375, 500), (256, 256), (200, 150)]):
            img = _image(k, size)
            a, b = ours(img), ref(img)
            assert a.shape == (3, 224, 224) and torch.equal(a, b), (config, size)


def test_linprobe_train_transform_is_mae_one_draw_crop_flip():
    ours = build_transform(_cfg(LIN).train_dataloader.dataset.transform)
    assert [type(t) for t in ours.transforms] == [MAERandomResizedCrop, T.RandomHorizontalFlip, T.ToTensor,
                                                  T.Normalize]
    crop, flip, _, norm = ours.transforms
    assert (crop.size, crop.scale, crop.interpolation) == ((224, 224), (0.08, 1.0), T.InterpolationMode.BICUBIC)
    assert crop.ratio == pytest.approx((3 / 4, 4 / 3)) and flip.p == 0.5
    assert list(norm.mean) == MEAN and list(norm.std) == STD
    # the same crop for the same seed, on shapes where the clipping to the image matters
    clipped = differs_from_torchvision = 0
    for w, h in [(500, 375), (375, 500), (224, 224), (64, 1000), (1000, 48)]:
        img = Image.new('RGB', (w, h))
        for seed in range(40):
            torch.manual_seed(seed)
            got = crop.get_params(img, crop.scale, crop.ratio)
            torch.manual_seed(seed)
            want = mae_crop_params(img, (0.08, 1.0), (3 / 4, 4 / 3))
            assert got == want, (w, h, seed)
            clipped += got[2] == h or got[3] == w
            torch.manual_seed(seed)
            differs_from_torchvision += T.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) != want
    assert clipped > 0 and differs_from_torchvision > 0  # the rule matters: torchvision retries up to 10 times
    # then bicubic resize, flip, ToTensor, Normalize: the same tensors
    ref = T.Compose([MAECropReference(224, interpolation=T.InterpolationMode.BICUBIC),  # interpolation=3 in the source
                     T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean=MEAN, std=STD)])
    for seed in range(8):
        img = _image(seed, [(300, 240), (120, 400)][seed % 2])
        torch.manual_seed(seed)
        a = ours(img)
        torch.manual_seed(seed)
        assert torch.equal(a, ref(img)), seed


# ---- 3. one fine-tuning step against main_finetune.py ---------------------------------------------------------------
def _timm_reference(model, cfg: Config, **kwargs) -> TimmViT:
    """models_vit.VisionTransformer (timm's ViT with eps-1e-6 LayerNorm) at the config's arch, with our weights."""
    bb = cfg.model.backbone
    ref = TimmViT(img_size=bb.img_size, patch_size=bb.patch_size, embed_dim=bb.embed_dim, depth=bb.depth,
                  num_heads=bb.num_heads, mlp_ratio=bb.mlp_ratio, qkv_bias=True, num_classes=cfg.model.num_classes,
                  drop_path_rate=bb.drop_path_rate, norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs)
    return ref


def test_finetune_steps_equal_main_finetune():
    """Four iterations (2 per epoch: warmup from lr 0, the peak, then the cosine) of the demo fine-tuning config
    through mmengine -- model.train_step with the config's optim_wrapper (LayerDecayConstructor, AdamW) and
    param_scheduler -- against main_finetune.py's loop written out: adjust_learning_rate, timm Mixup, models_vit
    (global pool -> fc_norm -> head), SoftTargetCrossEntropy, backward, torch AdamW on param_groups_lrd. fp32, one
    thread; allowed 1e-6 on the losses and weights, measured 0 (bit for bit)."""
    cfg = _cfg(FT_DEMO)
    torch.manual_seed(0)
    ours = MODELS.build(cfg.model)
    ref = _timm_reference(ours, cfg, global_pool='avg', fc_norm=True)
    ref.load_state_dict({_official(k): v for k, v in ours.state_dict().items()}, strict=True)
    ours.train()
    ref.train()
    assert ours.criterion.__class__ is SoftTargetCrossEntropy and ours.mixup is not None
    wrapper = build_optim_wrapper(ours, cfg.optim_wrapper)
    ipe, lr, min_lr = 2, cfg.optim_wrapper.optimizer.lr, 1e-6
    schedulers = _schedulers(cfg, wrapper, ipe)
    # main_finetune.py
    groups = mae_param_groups_lrd(ref.named_parameters(), num_blocks=cfg.model.backbone.depth, weight_decay=0.05,
                                  layer_decay=0.65)
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != 'names'} for g in groups], lr=lr)
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_minmax=None, prob=1.0, switch_prob=0.5, mode='batch',
                  label_smoothing=0.1, num_classes=cfg.model.num_classes)
    criterion = SoftTargetCrossEntropy()

    gen = torch.Generator().manual_seed(1)
    size = cfg.model.backbone.img_size
    batches = [(torch.randn(4, 3, size, size, generator=gen), torch.randint(0, 6, (4,), generator=gen))
               for _ in range(4)]
    initial = {k: v.detach().clone() for k, v in ref.named_parameters()}
    loss_diffs, lrs = [], []
    for it, (x, y) in enumerate(batches):
        _seed_all(100 + it)  # Mixup draws from numpy, drop path from torch
        log = ours.train_step(dict(inputs=x.clone(), data_samples=dict(label=y.clone())), wrapper)
        for s in schedulers:  # ParamSchedulerHook.after_train_iter
            s.step()

        step_lr = mae_lr(it / ipe, lr, min_lr, warmup_epochs=1, epochs=4)
        for g in opt.param_groups:
            g['lr'] = step_lr * g['lr_scale']
        lrs.append(step_lr)
        _seed_all(100 + it)
        samples, targets = mixup(x.clone(), y.clone())
        loss = criterion(ref(samples), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_diffs.append(abs(log['loss'].item() - loss.item()))
    assert lrs[0] == 0.0 and lrs[2] == lr and 0 < lrs[3] < lr  # warmup from 0, the peak, the cosine
    ref_params = dict(ref.named_parameters())
    weight_diff = max((p.detach() - ref_params[_official(n)].detach()).abs().max().item()
                      for n, p in ours.named_parameters())
    moved = max((p.detach() - initial[n]).abs().max().item() for n, p in ref_params.items())
    assert max(loss_diffs) <= 1e-6 and weight_diff <= 1e-6, (loss_diffs, weight_diff)
    assert moved > 1e-4  # the steps did change the weights


# ---- 4. LARS ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('weight_decay', [0.0, 0.05], ids=['recipe wd 0', 'wd 0.05'])
def test_maelars_is_mae_util_lars(weight_decay):
    """Three steps on a 2-D weight, a 1-D bias and an all-zero 2-D weight (param norm 0: trust ratio 1), with an lr
    change between steps (the lr stays outside the momentum buffer): MAELARS against util/lars.py's rule."""
    w0 = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], dtype=torch.float64)
    b0 = torch.tensor([0.1, -0.2], dtype=torch.float64)
    z0 = torch.zeros(2, 2, dtype=torch.float64)
    grads = [[torch.tensor([[0.2, 0.1, -0.3], [0.0, 0.4, 0.1]]), torch.tensor([0.3, -0.1]),
              torch.tensor([[0.1, 0.2], [0.3, 0.4]])],
             [torch.tensor([[-0.1, 0.3, 0.2], [0.5, -0.2, 0.0]]), torch.tensor([-0.2, 0.4]),
              torch.tensor([[0.0, -0.1], [0.2, 0.0]])],
             [torch.tensor([[0.05, 0.0, 0.1], [-0.3, 0.1, 0.2]]), torch.tensor([0.0, 0.1]),
              torch.tensor([[0.3, 0.0], [0.0, -0.2]])]]
    lrs = [0.5, 0.25, 6.4]
    params = [nn.Parameter(t.clone()) for t in (w0, b0, z0)]
    opt = MAELARS(params, lr=lrs[0], weight_decay=weight_decay, momentum=0.9, trust_coefficient=0.001)
    ref = [t.clone() for t in (w0, b0, z0)]
    mus = [torch.zeros_like(t) for t in ref]
    for step, (grad, lr) in enumerate(zip(grads, lrs)):
        for p, g in zip(params, grad):
            p.grad = g.to(torch.float64)
        opt.param_groups[0]['lr'] = lr
        opt.step()
        for k, g in enumerate(grad):
            ref[k], mus[k] = mae_lars_step(ref[k], g.to(torch.float64), mus[k], lr, weight_decay)
        for p, r in zip(params, ref):
            torch.testing.assert_close(p.detach(), r, rtol=0, atol=1e-15, msg=f'step {step}')
    # first step in numbers: the 2-D weight moves by lr * 0.001 * |w + wd w| / |g + wd w| * (g + wd w), the bias by
    # lr * g (no trust ratio on 1-D parameters), the zero weight by lr * g (trust ratio 1)
    p = [nn.Parameter(t.clone()) for t in (w0, b0, z0)]
    one = MAELARS(p, lr=0.5, weight_decay=weight_decay)
    for q, g in zip(p, grads[0]):
        q.grad = g.to(torch.float64)
    one.step()
    dp = grads[0][0].to(torch.float64) + weight_decay * w0
    torch.testing.assert_close(p[0].detach(), w0 - 0.5 * 0.001 * w0.norm() / dp.norm() * dp, rtol=0, atol=1e-15)
    torch.testing.assert_close(p[1].detach(), b0 - 0.5 * grads[0][1].to(torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(p[2].detach(), -0.5 * grads[0][2].to(torch.float64), rtol=0, atol=1e-15)


def test_timm_lars_with_wd_0_is_not_mae_lars():
    """The recipe's caution: timm.optim.Lars with weight_decay 0 and its default always_adapt=False applies no trust
    ratio, i.e. plain momentum SGD: the weight moves ~|w| / (1000 |g|) times more than with MAE's LARS."""
    from timm.optim import Lars

    w0 = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])
    b0 = torch.tensor([0.1, -0.2])
    gw, gb = torch.tensor([[0.2, 0.1, -0.3], [0.0, 0.4, 0.1]]), torch.tensor([0.3, -0.1])
    out = {}
    for name, make in [('mae', lambda ps: MAELARS(ps, lr=0.5, weight_decay=0.0, momentum=0.9)),
                       ('timm', lambda ps: Lars(ps, lr=0.5, momentum=0.9, weight_decay=0.0, trust_coeff=0.001))]:
        ps = [nn.Parameter(w0.clone()), nn.Parameter(b0.clone())]
        opt = make(ps)
        for _ in range(2):
            ps[0].grad, ps[1].grad = gw.clone(), gb.clone()
            opt.step()
        out[name] = [p.detach() for p in ps]
    mae_w, mae_b = out['mae']
    timm_w, timm_b = out['timm']
    ratio = ((timm_w - w0).norm() / (mae_w - w0).norm()).item()
    assert ratio == pytest.approx(gw.norm().item() / (0.001 * w0.norm().item()), rel=1e-4)  # ~ 219x
    torch.testing.assert_close(timm_b, mae_b)  # 1-D: both plain momentum SGD


# ---- 5. lr schedule --------------------------------------------------------------------------------------------------
def _lr_per_iteration(cfg: Config, wrapper, epoch_length: int, iters: int) -> np.ndarray:
    """[iters, groups]: the lr each iteration trains with (the value in the groups before it: set by the schedulers'
    construction for iteration 0, then by ParamSchedulerHook.after_train_iter stepping them after each iteration)."""
    schedulers = _schedulers(cfg, wrapper, epoch_length)
    groups = wrapper.param_groups  # the optimizer's groups, then mmengine's unscaled 'base_lr' entry if > 1 group
    assert groups[:len(wrapper.optimizer.param_groups)] == wrapper.optimizer.param_groups
    out = np.empty((iters, len(groups)))
    for it in range(iters):
        out[it] = [g['lr'] for g in groups]
        for s in schedulers:
            s.step()
    return out


@pytest.mark.filterwarnings('ignore:Detected call of:UserWarning')  # schedulers stepped without a step
def test_finetune_lr_schedule_is_mae_adjust_learning_rate(vitb_ft):
    """Iteration k of epoch e trains, in MAE, at adjust_learning_rate(k / iters_per_epoch + e) x lr_scale, set before
    the iteration; MAE applies min_lr before the scale (group lr = scale x (min_lr + (lr - min_lr) c)), our
    eta_min_ratio gives each group ratio x its peak = scale x min_lr at the end: the same number."""
    cfg, model = vitb_ft
    ipe, epochs, warmup, lr, min_lr = 10, 100, 5, 2e-3, 1e-6
    assert (cfg.train_cfg.max_epochs, cfg.warmup_epochs, cfg.min_lr) == (epochs, warmup, min_lr)
    warm, cos = cfg.param_scheduler
    assert (warm.type, warm.begin, warm.end, cos.type, cos.begin, cos.end, cos.T_max) == \
        ('LinearWarmupFromZeroLR', 0, 5, 'CosineAnnealingLR', 5, 100, 95)
    assert cos.eta_min_ratio * lr == pytest.approx(min_lr, rel=1e-12)
    wrapper = build_optim_wrapper(model, _cpu_optim_wrapper(cfg))
    # the optimizer's 28 groups, and the base lr mmengine logs (a pseudo-group without scale)
    scales = np.array([g['lr_scale'] for g in wrapper.optimizer.param_groups] + [1.0])
    assert len(wrapper.param_groups) == 29 and wrapper.base_param_settings is wrapper.param_groups[-1]
    got = _lr_per_iteration(cfg, wrapper, ipe, epochs * ipe)
    want = np.array([[mae_lr(it / ipe, lr, min_lr, warmup, epochs) * s for s in scales] for it in range(epochs * ipe)])
    diff = np.abs(got - want)
    # the recursive cosine of mmengine accumulates rounding: measured 2e-18 absolute, 5.5e-14 relative at most
    assert np.all(diff <= 1e-12 * want), (diff / np.maximum(want, 1e-300)).max()
    assert np.all(got[0] == 0.0)  # warmup from exactly 0
    np.testing.assert_allclose(got[warmup * ipe], lr * scales, rtol=1e-15)  # the peak at the end of the warmup
    last = min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (1 - 1 / 950)))  # epoch 99.9
    np.testing.assert_allclose(got[-1], scales * last, rtol=1e-9)


@pytest.mark.filterwarnings('ignore:Detected call of:UserWarning')  # schedulers stepped without a step
def test_linear_lr_schedule_is_mae_and_the_accumulation_offset_is_bounded():
    """Linear probing: lr 6.4 (= 0.1 x 16384 / 256), warmup 10 epochs from 0, cosine to 0 at 90. Per iteration our
    schedule is MAE's formula. With --accum_iter 4 MAE sets the lr at the FIRST micro-batch of each optimizer step;
    mmengine's value at the step is that of the LAST one (the header's deviation): measured on ImageNet's 312
    iterations per epoch (1,281,167 images / (8 x 512), drop_last), at most 3 / (10 x 312) = 0.096 % of the peak."""
    cfg = _cfg(LIN)
    lr, epochs, warmup, accum = 6.4, 90, 10, 4
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.1 * 16384 / 256, rel=1e-15) == lr
    assert cfg.optim_wrapper.accumulative_counts == accum and cfg.train_cfg.max_epochs == epochs
    warm, cos = cfg.param_scheduler
    assert (warm.end, cos.begin, cos.end, cos.T_max, cos.eta_min) == (warmup, warmup, epochs, epochs - warmup, 0.0)
    head = nn.Linear(4, 2)
    wrapper = build_optim_wrapper(head, _cpu_optim_wrapper(cfg))
    assert type(wrapper.optimizer) is MAELARS
    ipe = 1281167 // 8 // 512
    assert ipe == 312 and ipe % accum == 0  # MAE restarts the accumulation each epoch: the groups line up
    got = _lr_per_iteration(cfg, wrapper, ipe, epochs * ipe)[:, 0]
    want = np.array([mae_lr(it / ipe, lr, 0.0, warmup, epochs) for it in range(epochs * ipe)])
    per_iteration = np.abs(got - want).max()
    assert per_iteration <= 1e-12, per_iteration
    # optimizer steps: MAE at micro-batch 4m (adjust_learning_rate when data_iter_step % accum_iter == 0), ours at
    # 4m + 3 (mmengine's OptimWrapper steps on the 4th backward; its schedulers step every iteration)
    mae_steps = np.array([mae_lr((e * ipe + k) / ipe, lr, 0.0, warmup, epochs)
                          for e in range(epochs) for k in range(0, ipe, accum)])
    ours_steps = got[accum - 1::accum]
    offset = np.abs(ours_steps - mae_steps).max() / lr
    assert offset == pytest.approx(3 / (warmup * ipe), rel=1e-9) and offset < 1e-3
    after_warmup = np.abs(ours_steps - mae_steps)[warmup * ipe // accum:].max() / lr  # "less after"
    assert after_warmup < offset and after_warmup <= 3 * math.pi / (2 * (epochs - warmup) * ipe) + 1e-12


# ---- 6. linear probing ---------------------------------------------------------------------------------------------
def test_vitb_linear_probe_trains_only_the_head():
    cfg = _cfg(LIN)
    assert cfg.model.protocol == 'linear' and 'mixup' not in cfg.model and cfg.model.backbone.drop_path_rate == 0.0
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    bn, fc = model.head
    assert isinstance(bn, nn.BatchNorm1d) and (bn.affine, bn.eps, bn.num_features) == (False, 1e-6, 768)
    assert bn.weight is None and bn.bias is None
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert set(trainable) == {'head.1.weight', 'head.1.bias'}
    assert sum(trainable.values()) == 768 * 1000 + 1000 == 769_000
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.01) and fc.bias.abs().max() == 0  # trunc_normal 0.01
    assert type(model.criterion) is nn.CrossEntropyLoss and model.mixup is None
    assert model.backbone.norm is not None  # the cls token after the final norm


def test_linear_probe_steps_leave_the_encoder_untouched_and_match_main_linprobe():
    """The demo linear config (tiny encoder): three MAELARS steps through mmengine. Every encoder weight and buffer is
    unchanged, the encoder stays in eval mode under model.train(), the head moved; the logits are those of
    main_linprobe.py's model (timm ViT, cls token after the final norm, head = BN(affine=False) -> Linear) in train
    mode -- with drop path 0 the eval-mode encoder computes the same as the source's train-mode one."""
    cfg = _cfg(LIN_DEMO)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    ref = _timm_reference(model, cfg, global_pool='token')
    ref.head = nn.Sequential(nn.BatchNorm1d(ref.head.in_features, affine=False, eps=1e-6), ref.head)
    ref.load_state_dict({_official(k): v for k, v in model.state_dict().items()}, strict=True)
    model.train()
    ref.train()
    assert model.training and model.head.training and not model.backbone.training
    assert not any(m.training for m in model.backbone.modules())
    x = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model(x.clone()), ref(x.clone()), rtol=0, atol=1e-6)

    encoder = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    # mmengine's default constructor hands MAELARS every parameter (MAE: head.parameters()); the frozen ones never get
    # a gradient, so the step skips them: only the head's parameters can move
    head_ids = {id(p) for p in model.head.parameters()}
    assert all(id(p) in head_ids or not p.requires_grad for g in wrapper.optimizer.param_groups for p in g['params'])
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        batch = dict(inputs=torch.randn(8, 3, 64, 64, generator=gen),
                     data_samples=dict(label=torch.randint(0, 6, (8,), generator=gen)))
        model.train_step(batch, wrapper)
    assert not model.backbone.training and model.head.training
    assert all(p.grad is None for p in model.backbone.parameters())
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, encoder[k]), k
    after = model.head.state_dict()
    assert not torch.equal(after['1.weight'], head['1.weight'])
    assert not torch.equal(after['0.running_mean'], head['0.running_mean'])  # BN in train mode, as in the source
    assert after['0.num_batches_tracked'].item() == head['0.num_batches_tracked'].item() + 3


# ---- 7. resume -----------------------------------------------------------------------------------------------------
CLASSES = ('a_class', 'b_class', 'c_class')


def _imagenet_tree(root: Path, train_per_class: int = 4, val_per_class: int = 1) -> Path:
    for split, n in (('train', train_per_class), ('val', val_per_class)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                _image(100 * c + i + (50 if split == 'val' else 0), (48, 40)).save(root / split / name / f'{i}.JPEG')
    return root


class _Killed(Exception):
    """Raised by the kill hook: the run dies mid-epoch, as after a kill -9."""


@HOOKS.register_module(force=True)
class ClsRecipeKillTestHook(Hook):
    priority = 'LOWEST'

    def __init__(self, iteration: int):
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.iteration:
            raise _Killed(f'killed after iteration {self.iteration}')


def _scalars(run_dir: Path) -> dict[int, dict[str, float]]:
    records = [json.loads(line) for line in (run_dir / 'vis_data/scalars.json').read_text().splitlines()]
    return {r['iter']: {k: r[k] for k in ('loss', 'lr')} for r in records if 'loss' in r}


def test_killed_finetune_resumes_with_the_losses_of_the_uninterrupted_run(tmp_path, monkeypatch):
    """The demo fine-tuning config on a 3-class tree (3 iterations of 4 per epoch, 2 epochs, no data workers), through
    tools/train.py. The recipe checkpoints every epoch; a run killed mid-epoch 2 (iteration 4) resumes from epoch 1's
    checkpoint with --resume, trains epoch 2 again and logs, iteration for iteration, the losses and lrs of the
    uninterrupted run -- bit for bit -- and ends with the same weights. The logged lr is also MAE's formula."""
    data = _imagenet_tree(tmp_path / 'imagenet')
    monkeypatch.chdir(tmp_path)
    opts = ['model.num_classes=3', 'model.mixup.num_classes=3', 'train_dataloader.batch_size=4',
            'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0', 'train_cfg.max_epochs=2',
            'train_cfg.val_interval=1', 'default_hooks.logger.interval=1', 'log_processor.window_size=1']
    config = str(ROOT / FT_DEMO)
    full, part = tmp_path / 'full', tmp_path / 'part'
    real = train_tool.seed_and_rng_state

    def with_kill(cfg):
        line = real(cfg)
        cfg.custom_hooks = [*cfg.custom_hooks, dict(type='ClsRecipeKillTestHook', iteration=4)]
        return line

    train_tool.main([config, '--data-root', str(data), '--work-dir', str(full), '--cfg-options', *opts])
    with monkeypatch.context() as m, pytest.raises(_Killed):
        m.setattr(train_tool, 'seed_and_rng_state', with_kill)
        train_tool.main([config, '--data-root', str(data), '--work-dir', str(part), '--cfg-options', *opts])
    assert (part / 'epoch_1.pth').is_file() and not (part / 'epoch_2.pth').exists()
    train_tool.main([config, '--data-root', str(data), '--work-dir', str(part), '--resume', '--cfg-options', *opts])

    (uninterrupted,), (first, resumed) = [sorted(p for p in d.iterdir() if p.is_dir()) for d in (full, part)]
    expected = _scalars(uninterrupted)
    assert sorted(expected) == [1, 2, 3, 4, 5, 6]
    assert sorted(_scalars(first)) == [1, 2, 3, 4] and sorted(_scalars(resumed)) == [4, 5, 6]
    for it, values in [*_scalars(first).items(), *_scalars(resumed).items()]:
        assert values == expected[it], (it, values, expected[it])  # exact
    assert len({expected[i]['loss'] for i in expected}) == 6  # the losses are not trivially equal
    # the logged lr (group 0: the head, scale 1) is set before each iteration: MAE's formula at (iter - 1) / 3
    for it in expected:
        assert expected[it]['lr'] == pytest.approx(mae_lr((it - 1) / 3, 1e-3, 1e-6, 1, 4), rel=1e-9, abs=1e-15)
    end_full, end_part = (safe_torch_load(d / 'epoch_2.pth') for d in (full, part))
    for k, v in end_full['state_dict'].items():
        assert torch.equal(v, end_part['state_dict'][k]), k
    log = next(resumed.glob('*.log')).read_text()
    assert 'restored the RNG states of the interrupted run' in log


# ---- 8. --pretrained checkpoint layouts ------------------------------------------------------------------------------
ARCH = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0)


def _encoder(seed: int) -> dict[str, torch.Tensor]:
    """A timm-named encoder state dict whose every tensor (final norm and position table too) is distinctive."""
    torch.manual_seed(seed)
    enc = VisionTransformer(pos_embed='learned', **ARCH)
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_()
    return {k: v.clone() for k, v in enc.state_dict().items()}


STUDENT, TEACHER = _encoder(1), _encoder(2)
DECODER = {'decoder_embed.weight': torch.randn(16, 32), 'decoder_pos_embed': torch.randn(1, 17, 16),
           'decoder_blocks.0.norm1.weight': torch.ones(16), 'decoder_pred.weight': torch.randn(192, 16),
           'mask_token': torch.zeros(1, 1, 16)}
MMPRETRAIN_NAMES = [  # timm name -> mmpretrain VisionTransformer name
    (r'^patch_embed\.proj\.', 'patch_embed.projection.'), (r'^blocks\.(\d+)\.norm1\.', r'layers.\1.ln1.'),
    (r'^blocks\.(\d+)\.norm2\.', r'layers.\1.ln2.'), (r'^blocks\.(\d+)\.attn\.', r'layers.\1.attn.'),
    (r'^blocks\.(\d+)\.mlp\.fc1\.', r'layers.\1.ffn.layers.0.0.'),
    (r'^blocks\.(\d+)\.mlp\.fc2\.', r'layers.\1.ffn.layers.1.'), (r'^norm\.', 'ln1.')]


def _mmpretrain(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for pattern, repl in MMPRETRAIN_NAMES:
            k = re.sub(pattern, repl, k)
        out['backbone.' + k] = v
    return out


LAYOUTS = {  # name -> (file content, --pretrained-branch, expected encoder)
    'official SdAE, student': ({'model': {**STUDENT, **DECODER}, 'model_teacher': dict(TEACHER), 'epoch': 299,
                                'optimizer': {'state': {}, 'param_groups': []}}, 'student', STUDENT),
    'official SdAE, teacher': ({'model': {**STUDENT, **DECODER}, 'model_teacher': dict(TEACHER), 'epoch': 299},
                               'teacher', TEACHER),
    'official MAE': ({'model': {**STUDENT, **DECODER}, 'epoch': 1599}, 'student', STUDENT),
    'timm': ({**STUDENT, 'head.weight': torch.randn(5, 32), 'head.bias': torch.randn(5)}, 'student', STUDENT),
    'mmpretrain': ({'meta': {'mmpretrain_version': '1.2.0'},
                    'state_dict': {**_mmpretrain(STUDENT), 'neck.mask_token': torch.zeros(1, 1, 16),
                                   'head.fc.weight': torch.randn(5, 32)}}, 'student', STUDENT),
    'exported backbone (ours)': ({'state_dict': dict(TEACHER),
                                  'meta': dict(format=BACKBONE_FORMAT, version=1, method='sdae', branch='teacher',
                                               epoch=3, arch=ARCH)}, 'teacher', TEACHER),
    'raw pretraining run (ours)': ({'meta': {'sdae': {'method': 'sdae', 'arch': ARCH, 'epoch': 3}},
                                    'state_dict': {**{f'encoder.{k}': v for k, v in STUDENT.items()},
                                                   **{f'teacher.{k}': v for k, v in TEACHER.items()},
                                                   'decoder.pred.weight': torch.randn(192, 16)}}, 'teacher', TEACHER),
}


def _classifier(protocol: str, checkpoint: str | None, branch: str = 'student', num_classes: int = 5):
    torch.manual_seed(0)
    mixup = dict(num_classes=num_classes, label_smoothing=0.1) if protocol == 'finetune' else None
    return MODELS.build(dict(type='SdAEImageClassifier', protocol=protocol, num_classes=num_classes, mixup=mixup,
                             backbone=dict(**ARCH, drop_path_rate=0.0, init_cfg=dict(type='Pretrained',
                                                                                      checkpoint=checkpoint,
                                                                                      branch=branch))))


@pytest.mark.parametrize('protocol', ['finetune', 'linear'])
@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_pretrained_layouts_load_into_the_classifier(layout, protocol, tmp_path, monkeypatch):
    content, branch, expected = LAYOUTS[layout]
    path = tmp_path / 'ckpt.pth'
    atomic_torch_save(content, path)
    model = _classifier(protocol, str(path), branch)
    new = ('fc_norm.', 'head.') if protocol == 'finetune' else ('head.',)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(new)}
    logged = []
    monkeypatch.setattr(model_module, 'print_log', lambda msg, **kw: logged.append(msg))
    model.init_weights()  # what mmengine's Runner calls
    own = model.backbone.state_dict()
    want = {k: v for k, v in expected.items() if protocol == 'linear' or not k.startswith('norm.')}
    assert sorted(own) == sorted(want)  # finetune: no final norm (models_vit deletes it); linear: loaded
    for k, v in want.items():
        assert torch.equal(own[k], v), k
    after = model.state_dict()
    assert sorted(before) == sorted(k for k in after if k.startswith(new)) and before
    for k, v in before.items():
        assert torch.equal(after[k], v), k  # new by design: kept as initialised
    news = 'fc_norm.*, head.*' if protocol == 'finetune' else 'head.*'
    assert any(f'new by design, initialised here: {news} (' in m for m in logged), logged


def test_pretrained_option_and_missing_keys():
    """--pretrained / --pretrained-branch reach the classifier's init_cfg; anything the encoder misses is an error."""
    args = train_tool.parse_args([str(ROOT / FT), '--pretrained', 'x/ckpt.pth', '--pretrained-branch', 'teacher'])
    cfg = train_tool.build_cfg(args)
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint=str(Path('x/ckpt.pth').resolve()),
                                               branch='teacher')
    assert _cfg(FT).model.backbone.init_cfg.branch == _cfg(LIN).model.backbone.init_cfg.branch == 'student'


@pytest.mark.parametrize('protocol', ['finetune', 'linear'])
def test_a_missing_encoder_key_is_an_error(protocol, tmp_path):
    broken = dict(STUDENT)
    broken.pop('blocks.1.mlp.fc2.bias')
    path = tmp_path / 'broken.pth'
    atomic_torch_save({'model': broken}, path)
    with pytest.raises(CheckpointMismatchError, match=r'backbone keys missing[\s\S]*blocks\.1\.mlp\.fc2\.bias'):
        _classifier(protocol, str(path)).init_weights()
    # a global-pool fine-tuned MAE checkpoint has no final norm: fine for fine-tuning (no final norm either), an
    # error for linear probing, which reads the normed cls token (main_linprobe.py would fail its assert too)
    no_norm = {k: v for k, v in STUDENT.items() if not k.startswith('norm.')}
    atomic_torch_save({'model': {**no_norm, 'fc_norm.weight': torch.ones(32), 'fc_norm.bias': torch.zeros(32),
                                 'head.weight': torch.randn(5, 32), 'head.bias': torch.zeros(5)}}, path)
    if protocol == 'finetune':
        _classifier(protocol, str(path)).init_weights()
    else:
        with pytest.raises(CheckpointMismatchError, match=r'norm\.weight'):
            _classifier(protocol, str(path)).init_weights()


# ---- 9. config headers and the recipe batch -------------------------------------------------------------------------
def _header(config: str) -> str:
    text = (ROOT / config).read_text()
    return text[:re.search(r'^_base_ = ', text, re.M).start()]


@pytest.mark.parametrize('config, source', [(FT, 'github.com/AbrahamYabo/SdAE main_finetune.py'),
                                            (LIN, 'github.com/AbrahamYabo/SdAE main_linprobe.py'),
                                            (FT_DEMO, './sdae_vit-base-p16_8xb128-ft-100e_in1k.py'),
                                            (LIN_DEMO, './sdae_vit-base-p16_8xb512-accum4-linear-90e_in1k.py')])
def test_cls_configs_open_with_their_source_and_a_deviation_table(config, source):
    header = _header(config)
    assert re.search(r'^# SOURCE: ' + re.escape(source), header, re.M), 'no source line'
    assert re.search(r'^# Deviations? .*\| reason$', header, re.M) or \
        re.search(r'^# Deliberate deviations from the source\s+\| reason$', header, re.M), 'no deviation table'
    rows = [line for line in header.splitlines() if re.match(r'^# \S.*\|', line) and 'reason' not in line]
    assert len(rows) >= 3, 'the deviation table is empty'
    if source.startswith('./'):
        assert (ROOT / 'cls_configs' / source).is_file()
    else:
        assert 'tests/test_cls_recipes.py checks each against the source' in header


def test_recipe_arguments_are_the_sources():
    """The numbers in the recipe headers: SdAE's main_finetune.py defaults with its README command (8 GPUs,
    --batch_size 128 --epochs 100), MAE's main_linprobe.py (--batch_size 512, 90 epochs, blr 0.1, wd 0, cls token)."""
    ft, lin = _cfg(FT), _cfg(LIN)
    bb = ft.model.backbone
    assert (bb.patch_size, bb.embed_dim, bb.depth, bb.num_heads, bb.mlp_ratio, bb.img_size, bb.drop_path_rate) == \
        (16, 768, 12, 12, 4.0, 224, 0.1)
    assert ft.model.mixup == dict(mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_minmax=None, prob=1.0, switch_prob=0.5,
                                  mode='batch', label_smoothing=0.1, num_classes=1000)
    assert (ft.train_dataloader.batch_size, ft.train_dataloader.drop_last, ft.train_cfg.max_epochs) == (128, True, 100)
    assert (ft.optim_wrapper.type, ft.optim_wrapper.loss_scale) == ('AmpOptimWrapper', 'dynamic')
    assert ft.optim_wrapper.get('dtype') is None and lin.optim_wrapper.get('dtype') is None  # autocast: CUDA fp16
    assert 'clip_grad' not in ft.optim_wrapper  # --clip_grad None
    assert 'accumulative_counts' not in ft.optim_wrapper  # --accum_iter 1
    assert ft.optim_wrapper.optimizer == dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05)
    assert ft.train_cfg.val_interval == lin.train_cfg.val_interval == 1 and ft.val_evaluator.topk == (1, 5)
    assert lin.model.protocol == 'linear' and lin.model.backbone.drop_path_rate == 0.0  # models_vit default 0
    assert (lin.train_dataloader.batch_size, lin.train_dataloader.drop_last) == (512, True)
    assert lin.optim_wrapper.optimizer == dict(type='MAELARS', lr=6.4, weight_decay=0.0, momentum=0.9,
                                               trust_coefficient=0.001)
    assert (lin.optim_wrapper.type, lin.optim_wrapper.loss_scale, lin.optim_wrapper.accumulative_counts) == \
        ('AmpOptimWrapper', 'dynamic', 4)
    for cfg in (ft, lin):
        assert cfg.val_dataloader.dataset.transform == dict(type='eval', input_size=224)
        assert cfg.val_dataloader.dataset.split == 'val' and cfg.train_dataloader.dataset.split == 'train'
    torch.manual_seed(0)
    head = MODELS.build(dict(ft.model, backbone=dict(ft.model.backbone, depth=1))).head
    assert head.weight.std().item() == pytest.approx(2e-5, rel=0.02) and head.bias.abs().max() == 0


def test_recipe_batch_hook_enforces_1024_and_16384():
    ft, lin = _cfg(FT), _cfg(LIN)
    assert [h.batch_size for h in ft.custom_hooks if h.type == 'SdAERecipeBatchHook'] == [1024]
    assert [h.batch_size for h in lin.custom_hooks if h.type == 'SdAERecipeBatchHook'] == [16384]
    assert check_effective_batch(ft, 8, 1024) == 'total batch 1024 = 8 processes x 128: the recipe batch'
    assert check_effective_batch(lin, 8, 16384) == \
        'total batch 16384 = 8 processes x 512 x 4 accumulated batches: the recipe batch'
    SdAERecipeBatchHook(batch_size=1024).before_run(SimpleNamespace(cfg=ft, world_size=8))
    SdAERecipeBatchHook(batch_size=16384).before_run(SimpleNamespace(cfg=lin, world_size=8))
    # a wrong effective batch is refused with the fix
    with pytest.raises(RecipeBatchError, match=r'train at 512 .*train_dataloader\.batch_size=256 \(1024 / 4'):
        SdAERecipeBatchHook(batch_size=1024).before_run(SimpleNamespace(cfg=ft, world_size=4))
    # gradient accumulation is counted: 8 GPUs x 32 x 4 reaches the fine-tuning batch too
    accum = _cfg(FT)
    accum.merge_from_dict({'train_dataloader.batch_size': 32, 'optim_wrapper.accumulative_counts': 4})
    assert 'the recipe batch' in check_effective_batch(accum, 8, 1024)
    no_accum = _cfg(LIN)
    no_accum.optim_wrapper.accumulative_counts = 1
    with pytest.raises(RecipeBatchError, match=r'train at 4096 .*batch_size=2048 \(16384 / 8 processes\)'):
        SdAERecipeBatchHook(batch_size=16384).before_run(SimpleNamespace(cfg=no_accum, world_size=8))
    with pytest.raises(RecipeBatchError, match=r'at 8192 .*batch_size=1024 \(16384 / 4 processes / 4 accumulated\)'):
        check_effective_batch(lin, 4, 16384)
    for demo in (FT_DEMO, LIN_DEMO):  # demos run anywhere
        assert not any(h.type == 'SdAERecipeBatchHook' for h in _cfg(demo).custom_hooks)


def test_demo_configs_deviate_only_as_their_tables_say():
    """The demo rows (arch, 6 classes, 64 px / eval 73, epochs, lr, batch, fp32, no batch hook); the rest inherited."""
    for demo, recipe in ((FT_DEMO, FT), (LIN_DEMO, LIN)):
        d, r = _cfg(demo), _cfg(recipe)
        bb = d.model.backbone
        assert (bb.img_size, bb.patch_size, bb.embed_dim, bb.depth, bb.num_heads) == (64, 8, 192, 6, 3)
        assert d.model.num_classes == 6 and d.model.protocol == r.model.protocol
        assert bb.drop_path_rate == r.model.backbone.drop_path_rate and bb.init_cfg == r.model.backbone.init_cfg
        assert d.val_dataloader.dataset.transform == dict(type='eval', input_size=64)
        assert build_transform(d.val_dataloader.dataset.transform).transforms[0].size == int(64 / 0.875) == 73
        assert d.train_dataloader.dataset.transform == dict(r.train_dataloader.dataset.transform, input_size=64)
        assert d.optim_wrapper.type == 'FiniteGradOptimWrapper' and 'accumulative_counts' not in d.optim_wrapper
        assert d.optim_wrapper.optimizer == dict(r.optim_wrapper.optimizer, lr=d.optim_wrapper.optimizer.lr)
        assert [(s.type, s.by_epoch, s.convert_to_iter_based) for s in d.param_scheduler] == \
            [(s.type, s.by_epoch, s.convert_to_iter_based) for s in r.param_scheduler]
        assert (d.param_scheduler[0].end, d.param_scheduler[1].end, d.train_cfg.max_epochs) == (1, 4, 4)
    ft, lin = _cfg(FT_DEMO), _cfg(LIN_DEMO)
    assert (ft.optim_wrapper.optimizer.lr, ft.train_dataloader.batch_size) == (1e-3, 64)
    assert ft.optim_wrapper.paramwise_cfg == _cfg(FT).optim_wrapper.paramwise_cfg
    assert ft.param_scheduler[1].eta_min_ratio * 1e-3 == pytest.approx(1e-6, rel=1e-12)
    assert ft.model.mixup == dict(_cfg(FT).model.mixup, num_classes=6)
    assert (lin.optim_wrapper.optimizer.lr, lin.train_dataloader.batch_size) == (6.4, 32)
    assert lin.param_scheduler[1].eta_min == 0.0


def test_top1_top5_are_timm_accuracy():
    """main_finetune.py / main_linprobe.py evaluate: timm.utils.accuracy(output, target, topk=(1, 5)), averaged over
    the images; ours: the model's predict mode -> SdAETopKAccuracy."""
    from timm.utils import accuracy

    from sdae_suite.classification import SdAETopKAccuracy

    model = _classifier('linear', None, num_classes=10)
    model.eval()
    x = torch.randn(40, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits = model(x)
    labels = torch.randint(0, 10, (40,), generator=torch.Generator().manual_seed(6))
    labels[::2] = logits[::2].argmax(1)  # half of them right at least: top-1 and top-5 well above chance
    metric = SdAETopKAccuracy(topk=(1, 5))
    with torch.no_grad():
        metric.process(None, model(x, dict(label=labels, index=torch.arange(40)), mode='predict'))
    got = metric.compute_metrics(metric.results)
    top1, top5 = accuracy(logits, labels, topk=(1, 5))
    assert got == {'top1': pytest.approx(top1.item(), abs=1e-4), 'top5': pytest.approx(top5.item(), abs=1e-4)}
    assert 50 <= got['top1'] < got['top5'] < 100
