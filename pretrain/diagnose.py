"""How much of the pretraining targets a no-learning baseline explains, against the student.

Library of ``tools/diagnose_targets.py``.

On held-out images and the same masks as the student, ridge regressions predict the targets of the masked patches
from what the student's input holds without any learning from images:
  - ``position``: the masked patch's position only (one-hot);
  - ``position+colours``: position + mean / std colour of the visible patches among its 8 neighbours (and how many
    are visible) + the mean colour of all visible patches of the image.
Each baseline is fitted on the first half of the images and scored on the second half: R^2 (explained variance of
the targets, pooled over channels, clipped at 0: a baseline worse than the mean explains nothing) and the training
loss its predictions would get. The student's loss on that same half is the comparison: a student that does not beat
``position+colours`` has learned nothing the colour shortcut does not give.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.config import Config

from sdae_suite.backbones.vit import normalize_pixels
from sdae_suite.engine.checkpoint_io import safe_torch_load

from .masking import plan_masks
from .model import MaskedPretrainer, cosine_loss, patchify
from .monitors import effective_rank, mean_cosine_to_mean

BASELINES = ('position', 'position+colours')


class DiagnoseError(ValueError):
    """The checkpoint or data cannot be diagnosed; the message names the file and the fix."""


def load_pretrainer(path: str | os.PathLike) -> MaskedPretrainer:
    """A raw pretraining checkpoint (mmengine, ``meta['cfg']`` + ``state_dict``) -> the model in eval mode."""
    obj = safe_torch_load(str(path))
    meta = obj.get('meta') if isinstance(obj, dict) else None
    if not (isinstance(meta, dict) and isinstance(meta.get('cfg'), str) and isinstance(obj.get('state_dict'), dict)):
        raise DiagnoseError(f'{path}: not a raw pretraining checkpoint (needs meta.cfg and state_dict as '
                            f'tools/pretrain.sh writes them, e.g. work_dirs/<cfg>/epoch_6.pth; exported backbones '
                            f'hold no teacher or decoder)')
    cfg = Config.fromstring(meta['cfg'], '.py')
    model_cfg = dict(cfg.model)
    model_cfg.pop('type', None)
    model_cfg.pop('data_preprocessor', None)
    with torch.random.fork_rng(devices=[]):
        model = MaskedPretrainer(**model_cfg)
    model.load_state_dict(obj['state_dict'])
    return model.eval()


def _read_images(root: str | os.PathLike, size: int, max_images: int | None) -> torch.Tensor:
    from sdae_suite.contracts import IMAGE_EXTENSIONS
    from sdae_suite.probes.data import load_images
    root = Path(root)
    files = sorted(str(p) for p in root.rglob('*') if p.suffix.lower() in IMAGE_EXTENSIONS)[:max_images]
    if len(files) < 4:
        raise DiagnoseError(f'{root}: found {len(files)} images; need at least 4 held-out images (half fit the '
                            f'baselines, half score them), e.g. data/demo/coco/val')
    return load_images(files, size)


def neighbour_colour_features(imgs: torch.Tensor, ids_masked: torch.Tensor, ids_keep: torch.Tensor,
                              grid: tuple[int, int], p: int) -> torch.Tensor:
    """imgs: [B, 3, H, W] in [0, 1]; ids_masked: [B, M]; ids_keep: [B, V] -> [B, M, 10]: per masked patch, mean (3)
    and std (3) colour of the pixels of its visible 8-neighbours, their count / 8 (1), and the mean colour of all
    visible patches of the image (3). No neighbour visible: zeros and count 0."""
    b, c = imgs.shape[:2]
    h, w = grid
    L = h * w
    px = imgs.reshape(b, c, h, p, w, p).permute(0, 2, 4, 1, 3, 5).reshape(b, L, c, p * p)
    s1, s2 = px.mean(-1), (px ** 2).mean(-1)  # per patch first / second moments [B, L, 3]
    visible = torch.zeros(b, L)
    visible.scatter_(1, ids_keep, 1.0)
    # 3x3 neighbourhood sums of visible patches' moments (centre excluded: the centre is masked).
    def nsum(x: torch.Tensor) -> torch.Tensor:  # [B, L, k] -> [B, L, k]
        g = x.transpose(1, 2).reshape(b, -1, h, w)
        k = torch.ones(g.shape[1], 1, 3, 3)
        k[:, :, 1, 1] = 0
        return F.conv2d(g, k, padding=1, groups=g.shape[1]).reshape(b, -1, L).transpose(1, 2)
    cnt = nsum(visible[..., None])  # [B, L, 1]
    m1 = nsum(s1 * visible[..., None]) / cnt.clamp_min(1)
    m2 = nsum(s2 * visible[..., None]) / cnt.clamp_min(1)
    std = (m2 - m1 ** 2).clamp_min(0).sqrt()
    img_mean = (s1 * visible[..., None]).sum(1, keepdim=True) / visible.sum(1).view(b, 1, 1)
    feats = torch.cat([m1, std, cnt / 8, img_mean.expand(-1, L, -1)], dim=-1)
    return torch.gather(feats, 1, ids_masked.unsqueeze(-1).expand(-1, -1, feats.shape[-1]))


def ridge_fit(x: torch.Tensor, y: torch.Tensor, lam: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [N, F], y: [N, D] -> (W [F, D], b [D]) minimising |y - xW - b|^2 + lam * N * |W|^2 (intercept not penalised).
    Closed form in float64 (torch.linalg.solve); by hand because it is four lines and sklearn is not a dependency."""
    x, y = x.double(), y.double()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    a = xc.T @ xc + lam * len(x) * torch.eye(x.shape[1], dtype=x.dtype)
    w = torch.linalg.solve(a, xc.T @ yc)
    return w, my - mx @ w


def r2(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Explained variance pooled over channels, 1 - SSE / SST (SST around the scored set's own mean), clipped at 0."""
    y = y.double()
    sse = ((y - pred.double()) ** 2).sum()
    sst = ((y - y.mean(0)) ** 2).sum()
    return max(0.0, 1.0 - (sse / sst.clamp_min(1e-12)).item())


@torch.no_grad()
def diagnose(checkpoint: str | os.PathLike, data: str | os.PathLike, max_images: int | None = 256, seed: int = 0,
             batch_size: int = 64) -> dict[str, Any]:
    model = load_pretrainer(checkpoint)
    enc = model.encoder
    size = enc.grid[0] * enc.patch_size
    imgs_u8 = _read_images(data, size, max_images)
    gen = torch.Generator().manual_seed(seed)
    p = enc.patch_size
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in ('target', 'pred', 'pos', 'col')}
    folds = model.num_folds if model.objective == 'sdae' else 1
    plans = []
    for i in range(0, len(imgs_u8), batch_size):
        raw = imgs_u8[i:i + batch_size].float()
        x = normalize_pixels(raw)
        tokens, grid = enc.embed(x)
        b, L, _ = tokens.shape
        plan = plan_masks(b, L, model.mask_ratio, folds, generator=gen)
        plans.append(plan)
        pred = model.decoder(enc.forward_subset(tokens, plan.ids_keep), plan, grid)
        if model.objective == 'sdae':
            target = model.teacher_targets(x, plan)
        else:
            t = patchify(x, p)
            t = torch.gather(t, 1, plan.ids_masked.unsqueeze(-1).expand(-1, -1, t.shape[-1])).float()
            if model.norm_pix_loss:
                t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
            target = t
        rows['target'].append(target)
        rows['pred'].append(pred.float())
        rows['pos'].append(F.one_hot(plan.ids_masked, L).float())
        rows['col'].append(neighbour_colour_features(raw / 255.0, plan.ids_masked, plan.ids_keep, grid, p))
    cat = {k: torch.cat(v) for k, v in rows.items()}  # [N_img, M, ...]
    n = len(cat['target'])
    fit, ev = slice(0, n // 2), slice(n // 2, n)
    m, d = cat['target'].shape[1:]
    fold_sizes = plans[0].fold_sizes

    def loss_of(pred: torch.Tensor, target: torch.Tensor) -> float:
        if model.objective == 'sdae':
            return cosine_loss(pred, target, fold_sizes, model.cos_dim).item()
        return ((pred.float() - target) ** 2).mean().item()

    target_ev = cat['target'][ev]
    flat_t = lambda s: cat['target'][s].reshape(-1, d)  # noqa: E731
    result: dict[str, Any] = dict(
        checkpoint=str(checkpoint), data=str(data), objective=model.objective, cos_dim=model.cos_dim,
        images_fit=n // 2, images_scored=n - n // 2, masked_per_image=m, seed=seed,
        student=dict(loss=loss_of(cat['pred'][ev], target_ev)), baselines={},
        targets=dict(erank=effective_rank(flat_t(ev)).item(), mean_cos_to_mean=mean_cosine_to_mean(flat_t(ev)).item(),
                     dim=d))
    for name in BASELINES:
        feats = cat['pos'] if name == 'position' else torch.cat([cat['pos'], cat['col']], dim=-1)
        w, bias = ridge_fit(feats[fit].reshape(-1, feats.shape[-1]), flat_t(fit))
        pred = (feats[ev].reshape(-1, feats.shape[-1]).double() @ w + bias).float()
        result['baselines'][name] = dict(r2=r2(pred, flat_t(ev)), loss=loss_of(pred.reshape(-1, m, d), target_ev))
    # The student's own R^2, through the same kind of linear read-out (its cosine loss is scale-free, so its raw
    # predictions need not match the targets' scale).
    sp = cat['pred']
    w, bias = ridge_fit(sp[fit].reshape(-1, sp.shape[-1]), flat_t(fit))
    result['student']['r2_linear_readout'] = r2(sp[ev].reshape(-1, sp.shape[-1]).double() @ w + bias, flat_t(ev))
    return result


def table(result: dict) -> str:
    lines = [f'{result["checkpoint"]} ({result["objective"]}) on {result["data"]}: {result["images_scored"]} held-out '
             f'images scored, {result["masked_per_image"]} masked patches each; baselines fitted on '
             f'{result["images_fit"]} others',
             f'{"predictor":<24} {"R^2":>7} {"loss":>9}']
    for name, b in result['baselines'].items():
        lines.append(f'{name:<24} {b["r2"]:>7.3f} {b["loss"]:>9.4f}')
    s = result['student']
    lines.append(f'{"student":<24} {s["r2_linear_readout"]:>7.3f} {s["loss"]:>9.4f}   (R^2 via a linear read-out)')
    t = result['targets']
    lines.append(f'targets: effective rank {t["erank"]:.1f} of {t["dim"]}, mean cosine to the batch mean '
                 f'{t["mean_cos_to_mean"]:.3f}')
    best = min(b['loss'] for b in result['baselines'].values())
    verdict = ('the student beats every no-learning baseline' if s['loss'] < best else
               'the student does NOT beat the best no-learning baseline: its loss is what position + colour give')
    lines.append(f'verdict: {verdict} (student {s["loss"]:.4f} vs best baseline {best:.4f})')
    return '\n'.join(lines)


__all__ = ['BASELINES', 'DiagnoseError', 'diagnose', 'load_pretrainer', 'table',
           ]
