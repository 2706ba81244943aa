"""The MAE objective of MaskedPretrainer against facebookresearch/mae models_mae.py, written out in the test.

models_mae.py: ``random_masking`` (argsort of uniform noise, keep the first ``int(L * (1 - ratio))``), the encoder on
the visible patches + cls, ``forward_decoder`` (decoder_embed, mask tokens appended, unshuffled with ``ids_restore``
by ``gather``, cls put back, decoder positions, blocks, norm, pred over ALL patches, cls dropped), ``patchify``
(``nchpwq->nhwpqc``) and ``forward_loss`` (norm_pix_loss: per-patch mean / unbiased var with +1e-6; MSE per patch,
averaged over the MASKED patches with the 0/1 mask). Ours predicts the masked patches only and gathers them with
``ids_masked``; with the same noise both must give the same loss and the same gradients.
"""
from __future__ import annotations

import pytest
import torch

import sdae_suite.backbones  # noqa: F401
import sdae_suite.pretrain.model as model_mod
from sdae_suite.pretrain.masking import plan_masks
from sdae_suite.pretrain.model import MaskedPretrainer

P = 8
TINY_MAE = dict(encoder=dict(img_size=32, patch_size=P, embed_dim=32, depth=2, num_heads=2),
                decoder=dict(embed_dim=24, depth=2, num_heads=2), objective='mae')
NOISE_SEED = 1234


def _model(**kw) -> MaskedPretrainer:
    torch.manual_seed(0)
    model = MaskedPretrainer(**{**TINY_MAE, **kw})
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # move every trainable weight off its init (zero biases, unit norms, small mask token)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.train()


def _fix_mask(monkeypatch, seed: int = NOISE_SEED) -> None:
    """The model draws its mask from torch.rand(B, L) with this generator; the reference draws the same noise."""
    def seeded(batch, num_patches, mask_ratio, num_folds, device='cpu', generator=None):
        return plan_masks(batch, num_patches, mask_ratio, num_folds, device,
                          generator=torch.Generator().manual_seed(seed))
    monkeypatch.setattr(model_mod, 'plan_masks', seeded)


def mae_patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """models_mae.patchify, patch by patch: row-major patches, (p, q, c) inside a patch."""
    n, c, h, w = imgs.shape
    return torch.stack([imgs[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p].permute(0, 2, 3, 1).reshape(n, -1)
                        for i in range(h // p) for j in range(w // p)], dim=1)


def mae_reference(model: MaskedPretrainer, imgs: torch.Tensor, mask_ratio: float, norm_pix_loss: bool,
                  masked_only: bool = True, seed: int = NOISE_SEED) -> torch.Tensor:
    """models_mae.MaskedAutoencoderViT.forward, step by step, on ``model``'s weights."""
    enc, dec = model.encoder, model.decoder
    # forward_encoder
    x = enc.patch_embed(imgs)
    x = x + enc.pos_embed[:, 1:, :]
    n, length, d = x.shape
    len_keep = int(length * (1 - mask_ratio))
    noise = torch.rand(n, length, generator=torch.Generator().manual_seed(seed))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, d))
    mask = torch.ones([n, length])
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    cls_token = enc.cls_token + enc.pos_embed[:, :1, :]
    x = torch.cat((cls_token.expand(n, -1, -1), x), dim=1)
    for blk in enc.blocks:
        x = blk(x, None, 1)
    x = enc.norm(x)
    # forward_decoder
    x = dec.embed(x)
    mask_tokens = dec.mask_token.repeat(n, ids_restore.shape[1] + 1 - x.shape[1], 1)
    x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
    x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
    x = torch.cat([x[:, :1, :], x_], dim=1)
    x = x + dec.pos_embed
    for blk in dec.blocks:
        x = blk(x, None, 1)
    x = dec.norm(x)
    pred = dec.head(x)[:, 1:, :]
    # forward_loss
    target = mae_patchify(imgs, P)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.e-6) ** .5
    loss = ((pred - target) ** 2).mean(dim=-1)
    if not masked_only:
        return loss.mean()
    return (loss * mask).sum() / mask.sum()


@pytest.mark.parametrize('norm_pix_loss', [True, False])
@pytest.mark.parametrize('mask_ratio', [0.75, 0.5])
def test_mae_loss_and_gradients_equal_models_mae(monkeypatch, norm_pix_loss, mask_ratio):
    _fix_mask(monkeypatch)
    model = _model(norm_pix_loss=norm_pix_loss, mask_ratio=mask_ratio)
    g = torch.Generator().manual_seed(3)
    imgs = torch.randn(3, 3, 32, 32, generator=g) * 1.5 + 0.3
    imgs[:, :, :16] += 2.0  # the top half differs from the bottom half: a wrong mask or order changes the loss

    got = model(imgs, mode='loss')['loss']
    ref = mae_reference(model, imgs, mask_ratio, norm_pix_loss)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # The comparison can fail: the loss over all patches (visible ones included) is a different number.
    everything = mae_reference(model, imgs, mask_ratio, norm_pix_loss, masked_only=False)
    assert abs(everything.item() - ref.item()) > 1e-3 * ref.item()

    params = dict(model.named_parameters())
    names = ['decoder.head.weight', 'decoder.mask_token', 'decoder.embed.weight', 'encoder.cls_token',
             'encoder.blocks.0.attn.qkv.weight', 'encoder.patch_embed.proj.weight']
    grads = torch.autograd.grad(got, [params[k] for k in names])
    ref_grads = torch.autograd.grad(ref, [params[k] for k in names])
    for name, a, b in zip(names, grads, ref_grads):
        assert b.abs().sum() > 0, name
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_mae_loss_depends_on_the_mask(monkeypatch):
    """Two noise draws mask different patches; the reference follows the noise, so the loss must follow it too."""
    model = _model()
    imgs = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    losses = []
    for seed in (1234, 99):
        _fix_mask(monkeypatch, seed)
        got = model(imgs, mode='loss')['loss']
        torch.testing.assert_close(got, mae_reference(model, imgs, 0.75, True, seed=seed), rtol=1e-5, atol=1e-6)
        losses.append(got.item())
    assert losses[0] != pytest.approx(losses[1], rel=1e-4)


def test_norm_pix_target_uses_the_unbiased_variance_with_eps():
    """norm_pix_loss by hand on one patch: (x - mean) / sqrt(var_unbiased + 1e-6), over the p*p*3 values."""
    model = _model()
    with torch.no_grad():
        model.decoder.head.weight.zero_()
        model.decoder.head.bias.zero_()  # pred = 0: the loss is the mean square of the target over masked patches
    imgs = torch.zeros(1, 3, 32, 32)
    imgs[0, :, 0:8, 0:8] = torch.arange(192, dtype=torch.float32).reshape(8, 8, 3).permute(2, 0, 1) * 1e-4
    imgs[0, :, 8:, :] = torch.randn(3, 24, 32, generator=torch.Generator().manual_seed(6))
    imgs[0, :, :8, 8:] = 0.7  # constant patches: var 0, target 0 (the eps keeps it finite)
    tgt = mae_patchify(imgs, P)[0]
    n = tgt.shape[-1]
    var_u = tgt.var(-1)  # unbiased
    expected_per_patch = ((tgt - tgt.mean(-1, keepdim=True)) ** 2).sum(-1) / (n * (var_u + 1e-6))
    # patch 0 (values 0 .. 0.0191 in steps of 1e-4): unbiased var 1e-8 * n (n + 1) / 12 = 3.1e-5, so the +1e-6 eps
    # moves its term by 3 %: a var without the eps, or the biased var, would not give the expected loss
    assert var_u[0].item() == pytest.approx(1e-8 * (n * (n + 1) / 12), rel=1e-4)
    assert expected_per_patch[0].item() == pytest.approx((n - 1) / n * 3.088e-5 / (3.088e-5 + 1e-6), rel=1e-3)
    for seed in (1, 2, 3):
        plan = plan_masks(1, 16, 0.75, 1, generator=torch.Generator().manual_seed(seed))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(model_mod, 'plan_masks', lambda *a, _plan=plan, **k: _plan)
            got = model(imgs, mode='loss')['loss']
        assert got.item() == pytest.approx(expected_per_patch[plan.ids_masked[0]].mean().item(), rel=1e-5)
