"""SdAE / MAE pretraining model: masking, teacher targets, losses, EMA, errors (unit level, no Runner)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import sdae_suite.backbones  # noqa: F401
from sdae_suite.pretrain.data import CorruptImageError, ImageFolderPretrainDataset
from sdae_suite.pretrain.hooks import cosine_momentum, ema_update
from sdae_suite.pretrain.masking import fold_sizes, plan_masks
from sdae_suite.pretrain.model import (
    MaskedPretrainer,
    NonFiniteLossError,
    cosine_loss,
    patchify,
    standardize,
    validate_model_cfg,
)
from sdae_suite.pretrain.optim import PretrainOptimWrapperConstructor

TINY = dict(encoder=dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, drop_path_rate=0.1),
            decoder=dict(embed_dim=32, depth=1, num_heads=2))


def tiny_model(**kw) -> MaskedPretrainer:
    torch.manual_seed(0)
    return MaskedPretrainer(**{**TINY, **kw})


def check_partition(plan, num_patches: int) -> None:
    b = plan.ids_keep.shape[0]
    folds = [g.reshape(b, -1, g.shape[1]) for g in plan.fold_groups()]  # [B, k, n] per fold size
    for i in range(b):
        parts = [plan.ids_keep[i]] + [f[i, j] for f in folds for j in range(f.shape[1])]
        flat = torch.cat(parts)
        assert sorted(flat.tolist()) == list(range(num_patches))  # union = all patches, each exactly once (disjoint)
        assert torch.equal(torch.cat([f[i].reshape(-1) for f in folds]), plan.ids_masked[i])


def test_multifold_partition_official_shapes():
    plan = plan_masks(4, 196, 0.75, 3)
    assert plan.ids_keep.shape == (4, 49) and plan.ids_masked.shape == (4, 147)
    assert plan.fold_sizes == (49, 49, 49)
    (group,) = plan.fold_groups()
    assert group.shape == (12, 49)  # B*K sequences of 49: one teacher batch
    check_partition(plan, 196)
    assert torch.equal(torch.gather(plan.ids_keep, 1, torch.argsort(plan.ids_keep, 1)), plan.ids_keep.sort(1).values)
    assert not torch.equal(plan.ids_masked[0], plan.ids_masked[0].sort().values)  # random order, not sorted


def test_multifold_partition_ragged():
    plan = plan_masks(3, 64, 0.75, 5)  # 48 masked -> 10, 10, 10, 9, 9
    assert plan.fold_sizes == (10, 10, 10, 9, 9) == fold_sizes(48, 5)
    groups = plan.fold_groups()
    assert [tuple(g.shape) for g in groups] == [(9, 10), (6, 9)]
    check_partition(plan, 64)
    with pytest.raises(ValueError, match='num_folds'):
        fold_sizes(4, 5)


def test_forward_subset_equals_explicit_gather_and_backpropagates():
    vit = tiny_model().encoder.eval()
    tokens = torch.randn(2, 16, 32, requires_grad=True)
    index = torch.stack([torch.randperm(16)[:5] for _ in range(6)])  # r = 3 rows per image
    got = vit.forward_subset(tokens, index)
    picked = torch.stack([tokens[row // 3, index[row]] for row in range(6)])
    ref = vit.norm(vit.run_blocks(vit.prepend_cls(picked))[0])
    torch.testing.assert_close(got, ref)
    got.sum().backward()
    touched = torch.zeros(2, 16, dtype=torch.bool)
    for row in range(6):
        touched[row // 3, index[row]] = True
    assert torch.equal(tokens.grad.abs().sum(-1) > 0, touched)  # gradient reaches exactly the selected patches
    with pytest.raises(ValueError, match='not a multiple of the batch size 2'):
        vit.forward_subset(tokens, index[:5])


def test_teacher_folds_batched_equal_per_fold_loop_ragged():
    model = tiny_model(num_folds=5).eval()  # 16 patches, 12 masked -> folds 3, 3, 2, 2, 2
    x = torch.randn(2, 3, 32, 32)
    plan = plan_masks(2, 16, 0.75, 5)
    assert plan.fold_sizes == (3, 3, 2, 2, 2)
    got = model.teacher_targets(x, plan)
    assert got.shape == (2, 12, 32) and not got.requires_grad
    tokens, _ = model.teacher.embed(x)
    ref, start = [], 0
    for b in range(2):  # direct: one teacher call per image and fold
        row, start = [], 0
        for n in plan.fold_sizes:
            idx = plan.ids_masked[b:b + 1, start:start + n]
            out = model.teacher.forward_subset(tokens[b:b + 1], idx)[:, 1:]
            row.append(out)
            start += n
        ref.append(torch.cat(row, 1))
    ref = torch.cat(ref)
    ref = (ref - ref.mean(-1, keepdim=True)) / torch.sqrt(ref.var(-1, keepdim=True) + 1e-6)  # official: unbiased
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)

    model.teacher_view = 'full'
    full = model.teacher_targets(x, plan)
    feats = model.teacher(x)[:, 1:]
    ref = standardize(torch.stack([feats[b, plan.ids_masked[b]] for b in range(2)]))
    torch.testing.assert_close(full, ref)


def test_standardize_per_token():
    x = torch.randn(2, 5, 16) * 3 + 7
    y = standardize(x)
    # official engine_pretrain.py: torch.var, i.e. the unbiased variance (n - 1 = 15 here)
    d = x - x.mean(-1, keepdim=True)
    torch.testing.assert_close(y, d / ((d ** 2).sum(-1, keepdim=True) / 15 + 1e-6).sqrt())
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(-1), torch.ones(2, 5), atol=1e-4, rtol=0)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum() / max(float(a.norm() * b.norm()), 1e-8))


@pytest.mark.parametrize('sizes', [(4, 4, 4), (5, 4, 4)])
def test_cosine_loss_both_variants_against_direct(sizes):
    b, d = 2, 6
    m = sum(sizes)
    pred, target = torch.randn(b, m, d), torch.randn(b, m, d)
    per_token = [1 - _cos(pred[i, t], target[i, t]) for i in range(b) for t in range(m)]
    assert cosine_loss(pred, target, sizes, 'channels').item() == pytest.approx(sum(per_token) / len(per_token),
                                                                                abs=1e-6)
    per_fold_channel = []
    for i in range(b):
        start = 0
        for n in sizes:
            for c in range(d):
                per_fold_channel.append(1 - _cos(pred[i, start:start + n, c], target[i, start:start + n, c]))
            start += n
    expected = sum(per_fold_channel) / len(per_fold_channel)
    assert cosine_loss(pred, target, sizes, 'tokens').item() == pytest.approx(expected, abs=1e-6)
    if len(set(sizes)) == 1:  # the official expression, literally
        k, n = len(sizes), sizes[0]
        official = (1 - F.cosine_similarity(pred.reshape(b * k, n, d), target.reshape(b * k, n, d))).mean()
        assert cosine_loss(pred, target, sizes, 'tokens').item() == pytest.approx(official.item(), abs=1e-6)


def test_mae_target_and_loss():
    model = tiny_model(objective='mae')
    assert model.teacher is None and model.decoder.head.out_features == 8 * 8 * 3
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    p = patchify(x, 8)
    assert p.shape == (2, 16, 192)
    assert torch.equal(p[1, 5].reshape(8, 8, 3).permute(2, 0, 1), x[1, :, 8:16, 8:16])  # patch (row 1, col 1)
    with torch.no_grad():  # pred = 0: the loss is the mean square of the targets over the masked patches
        model.decoder.head.weight.zero_()
        model.decoder.head.bias.zero_()
    # norm_pix_loss: each target patch is (x - mean) / sqrt(var + 1e-6) with the unbiased var over its n = 192 values,
    # so its mean square is (n - 1) / n * var / (var + 1e-6) = 191/192 (var ~ 16 here), whichever patches are masked.
    loss = model(torch.randn(2, 3, 32, 32) * 4 + 1, mode='loss')['loss']
    assert loss.ndim == 0 and loss.item() == pytest.approx(191 / 192, rel=1e-5)
    model.norm_pix_loss = False  # raw pixels: a constant image c gives c^2
    assert model(torch.full((2, 3, 32, 32), 0.5), mode='loss')['loss'].item() == pytest.approx(0.25, rel=1e-6)
    # (the full objective against models_mae.py with a fixed mask: tests/test_mae_objective.py)


def test_teacher_gets_no_gradient_and_moves_only_by_ema():
    model = tiny_model(teacher_init='official')
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert not torch.equal(model.teacher.blocks[0].attn.qkv.weight, model.encoder.blocks[0].attn.qkv.weight)
    assert torch.equal(tiny_model(teacher_init='copy').teacher.blocks[0].attn.qkv.weight,
                       tiny_model(teacher_init='copy').encoder.blocks[0].attn.qkv.weight)
    wrapper = PretrainOptimWrapperConstructor(dict(optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.04)))(model)
    in_opt = {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}
    assert not in_opt & {id(p) for p in model.teacher.parameters()}
    assert id(model.encoder.pos_embed) not in in_opt  # fixed sin-cos table
    no_decay = {id(p) for g in wrapper.optimizer.param_groups if g['weight_decay'] == 0 for p in g['params']}
    for name in ('encoder.blocks.0.norm1.weight', 'decoder.head.bias'):
        assert id(model.get_parameter(name)) in no_decay
    # official (timm 0.3.2 add_weight_decay, empty skip list): the cls and mask tokens are decayed
    for name in ('encoder.cls_token', 'decoder.mask_token', 'encoder.blocks.0.attn.qkv.weight'):
        assert id(model.get_parameter(name)) in in_opt and id(model.get_parameter(name)) not in no_decay

    teacher0 = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    loss = model(torch.randn(4, 3, 32, 32), mode='loss')['loss']
    loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    wrapper.step()
    assert all(torch.equal(v, teacher0[k]) for k, v in model.teacher.state_dict().items())

    m = 0.9
    student = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    ema_update(model.teacher, model.encoder, m)
    for k, v in model.teacher.state_dict().items():
        torch.testing.assert_close(v, m * teacher0[k] + (1 - m) * student[k])


def test_cosine_momentum_schedule():
    assert cosine_momentum(0, 300, 0.96, 0.99) == pytest.approx(0.96)
    assert cosine_momentum(150, 300, 0.96, 0.99) == pytest.approx(0.975)
    assert cosine_momentum(300, 300, 0.96, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(75, 300, 0.96, 0.99) == pytest.approx(0.99 - 0.03 * (1 + math.cos(math.pi / 4)) / 2)


def test_non_finite_loss_is_refused():
    model = tiny_model()
    with pytest.raises(NonFiniteLossError, match='last checkpoint is intact'):
        model.parse_losses(dict(loss=torch.tensor(float('nan'))))


def test_bad_model_configs_name_the_problem():
    with pytest.raises(ValueError, match=r"model.objective must be one of \('sdae', 'mae'\), got 'simclr'"):
        validate_model_cfg(dict(TINY, objective='simclr'))
    with pytest.raises(ValueError, match="unknown key 'num_fold' in model: did you mean 'num_folds'"):
        validate_model_cfg(dict(TINY, num_fold=3))
    with pytest.raises(ValueError, match="unknown key 'dept' in model.encoder: did you mean 'depth'"):
        validate_model_cfg(dict(TINY, encoder=dict(TINY['encoder'], dept=3)))
    with pytest.raises(ValueError, match="model.cos_dim must be one of"):
        MaskedPretrainer(**TINY, cos_dim='rows')
    with pytest.raises(ValueError, match="teacher_view='full' needs cos_dim='channels'"):
        validate_model_cfg(dict(TINY, teacher_view='full', cos_dim='tokens'))


def test_corrupt_image_named_or_skipped_and_counted(tmp_path):
    for i in range(3):
        Image.new('RGB', (40, 40), (i * 50, 0, 0)).save(tmp_path / f'img{i}.jpg')
    bad = tmp_path / 'img1.jpg'
    bad.write_bytes(b'\xff\xd8 not really a jpeg')
    ds = ImageFolderPretrainDataset(str(tmp_path), img_size=32)
    assert ds[0]['inputs'].shape == (3, 32, 32) and ds[0]['inputs'].dtype == torch.uint8
    with pytest.raises(CorruptImageError, match=f'{bad}: cannot read this image.*skip_corrupt=True'):
        ds[1]
    ds = ImageFolderPretrainDataset(str(tmp_path), img_size=32, skip_corrupt=True)
    assert ds[1]['data_samples']['num_skipped'] == 1 and ds[1]['inputs'].shape == (3, 32, 32)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='empty: no images'):
        ImageFolderPretrainDataset(str(tmp_path / 'empty'))
    with pytest.raises(FileNotFoundError, match='pretraining data folder not found'):
        ImageFolderPretrainDataset(str(tmp_path / 'missing'))


@pytest.mark.parametrize('objective', ['sdae', 'mae'])
def test_loss_decreases_on_tiny_overfit(objective):
    model = tiny_model(objective=objective)
    g = torch.Generator().manual_seed(1)
    x = F.interpolate(torch.randn(4, 3, 4, 4, generator=g), size=32, mode='bilinear')  # smooth: predictable patches
    wrapper = PretrainOptimWrapperConstructor(dict(optimizer=dict(type='AdamW', lr=3e-3, weight_decay=0.0)))(model)
    losses = []
    for _ in range(60):
        loss = model(x, mode='loss')['loss']
        wrapper.update_params(loss)
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.75 * first, (first, last)
    if objective == 'mae':  # normalised pixel targets: predicting each patch's mean scores 1.0
        assert last < 0.9


class _FakeOptimWrapper:
    def __init__(self, step_taken: bool):
        self.step_taken = step_taken

    def should_update(self) -> bool:
        return self.step_taken


@pytest.mark.parametrize('mode', ['per_epoch', 'per_iter', 'per_ite'])
def test_ema_hook_momentum_comes_from_the_runner_position(mode):
    from types import SimpleNamespace

    import numpy as np
    from mmengine.logging import MessageHub, MMLogger

    from sdae_suite.pretrain.hooks import EMATeacherHook

    model = tiny_model()
    runner = SimpleNamespace(model=model, epoch=3, max_epochs=10, iter=7, max_iters=40,
                             optim_wrapper=_FakeOptimWrapper(True), message_hub=MessageHub.get_instance('test_ema'),
                             logger=MMLogger.get_instance('test_ema'))
    kwargs = dict(per_epoch=dict(by_epoch=True), per_iter=dict(by_epoch=False),
                  per_ite=dict(by_epoch=False, momentum_by_epoch=True))[mode]
    hook = EMATeacherHook(momentum=0.9, end_momentum=1.0, **kwargs)
    t0 = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    s = model.encoder.state_dict()
    hook.after_train_iter(runner, 0)
    changed = not torch.equal(model.teacher.blocks[0].mlp.fc1.weight, t0['blocks.0.mlp.fc1.weight'])
    assert changed == (mode != 'per_epoch')
    if mode == 'per_epoch':
        hook.after_train_epoch(runner)
    # official util/cosine_scheduler.py (niter_per_ep=1: one value per epoch), indexed by the epoch
    per_epoch_values = 1.0 + 0.5 * (0.9 - 1.0) * (1 + np.cos(np.pi * np.arange(10) / 10))
    m = cosine_momentum(7, 40, 0.9, 1.0) if mode == 'per_iter' else per_epoch_values[3]
    assert cosine_momentum(3, 10, 0.9, 1.0) == pytest.approx(per_epoch_values[3])
    for k, v in model.teacher.state_dict().items():
        torch.testing.assert_close(v, m * t0[k] + (1 - m) * s[k])
    assert runner.message_hub.get_scalar('train/ema_momentum').current() == pytest.approx(m)
    if mode == 'per_ite':  # official per_ite: the next iteration of the same epoch applies the same momentum again
        runner.iter = 8
        hook.after_train_iter(runner, 1)
        for k, v in model.teacher.state_dict().items():
            torch.testing.assert_close(v, m ** 2 * t0[k] + (1 - m ** 2) * s[k])
    if mode != 'per_epoch':  # an accumulation micro-step (no optimizer step): the teacher stays
        runner.optim_wrapper = _FakeOptimWrapper(False)
        before = model.teacher.blocks[0].mlp.fc1.weight.clone()
        hook.after_train_iter(runner, 1)
        assert torch.equal(model.teacher.blocks[0].mlp.fc1.weight, before)


def test_ema_hook_refuses_iteration_momentum_with_epoch_updates():
    from sdae_suite.pretrain.hooks import EMATeacherHook

    with pytest.raises(ValueError, match='momentum_by_epoch must be True or None'):
        EMATeacherHook(by_epoch=True, momentum_by_epoch=False)


@pytest.mark.parametrize('by_epoch', [True, False])
def test_ema_hook_is_a_no_op_for_mae(by_epoch):
    """MAE configs inherit the SdAE hooks (the official MAE ViT-B and the MAE demo): the hook must not fail on a model
    without a teacher, at the end of an epoch either (it once asked the message hub for a momentum never logged)."""
    from types import SimpleNamespace

    from mmengine.logging import MessageHub, MMLogger

    from sdae_suite.pretrain.hooks import EMATeacherHook

    model = tiny_model(objective='mae')
    assert getattr(model, 'teacher', None) is None
    hub = MessageHub.get_instance(f'test_ema_mae_{by_epoch}')
    runner = SimpleNamespace(model=model, epoch=0, max_epochs=2, iter=3, max_iters=8,
                             optim_wrapper=_FakeOptimWrapper(True), message_hub=hub,
                             logger=MMLogger.get_instance('test_ema_mae'))
    hook = EMATeacherHook(by_epoch=by_epoch)
    hook.before_train(runner)
    hook.after_train_iter(runner, 0)
    hook.after_train_epoch(runner)
    assert 'train/ema_momentum' not in hub.log_scalars
