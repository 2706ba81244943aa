"""SdAE and MAE pretraining in one model family: the objectives differ, the code that runs them does not.

Shared: student ViT encoder (``sdae_suite.backbones.vit.VisionTransformer``, MAE random masking), MAE decoder with mask
tokens. ``objective='sdae'``: the head predicts the features an EMA teacher (``self.teacher``, updated by
:class:`sdae_suite.pretrain.hooks.EMATeacherHook`) computes from multi-fold masked views; loss 1 - cosine. The defaults
are the official code's (AbrahamYabo/SdAE): token-axis cosine, timm-0.3.2 random teacher, folds.
``objective='mae'``: the head predicts pixels (optionally per-patch normalised); loss MSE. No teacher is built.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from timm.layers import trunc_normal_
from timm.models.vision_transformer import init_weights_vit_timm
from torch import nn

from sdae_suite.backbones.vit import Block, VisionTransformer, resize_pos_embed, sincos_pos_embed_2d

from .masking import MaskPlan, plan_masks
from .monitors import effective_rank, mean_cosine_to_mean

OBJECTIVES = ('sdae', 'mae')
TEACHER_VIEWS = ('folds', 'full')
TEACHER_INITS = ('official', 'mae', 'copy')
COS_DIMS = ('channels', 'tokens')


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN/inf; raised before the optimizer step so no checkpoint is touched."""


class MaskedDecoder(nn.Module):
    """MAE decoder: embeds the visible latents, inserts mask tokens, adds fixed sin-cos positions, runs ``depth``
    blocks, and predicts ``out_dim`` values for the masked patches only (the loss never reads the visible ones)."""

    def __init__(self, in_dim: int, grid: tuple[int, int], out_dim: int, embed_dim: int = 512, depth: int = 8,
                 num_heads: int = 16, mlp_ratio: float = 4.0):
        super().__init__()
        self.grid = tuple(grid)
        self.embed = nn.Linear(in_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(embed_dim, self.grid), requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, out_dim)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():  # MAE's decoder init
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, latent: torch.Tensor, plan: MaskPlan, grid: tuple[int, int]) -> torch.Tensor:
        """latent: [B, 1 + V, D_enc] (cls first) -> predictions for ``plan.ids_masked``: [B, M, out_dim]."""
        x = self.embed(latent)
        b, n, d = x.shape
        num_patches = plan.ids_restore.shape[1]
        x_ = torch.cat([x[:, 1:], self.mask_token.expand(b, num_patches + 1 - n, d)], dim=1)
        x_ = torch.gather(x_, 1, plan.ids_restore.unsqueeze(-1).expand(-1, -1, d))  # back to image order
        x = torch.cat([x[:, :1], x_], dim=1) + resize_pos_embed(self.pos_embed, self.grid, grid)
        for blk in self.blocks:
            x = blk(x, None, 1)
        x = torch.gather(x[:, 1:], 1, plan.ids_masked.unsqueeze(-1).expand(-1, -1, d))
        return self.head(self.norm(x))


def standardize(x: torch.Tensor) -> torch.Tensor:
    """x: [..., D] -> per-token standardisation over the D channels, (x - mean) / sqrt(var + 1e-6), in fp32.

    ``var`` is the unbiased variance (``torch.var``), as in the official engine_pretrain.py; a LayerNorm without affine
    would use the biased one. For the loss only the eps term differs (the cosine is scale-invariant per token for
    'channels' and per fold for 'tokens' up to that term: measured on [4, 147, 768] features, 1.2e-7 for 'tokens',
    0 for 'channels'), but matching the source costs nothing.
    """
    x = x.float()
    mean, var = x.mean(dim=-1, keepdim=True), x.var(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-6)


def official_teacher_init_(vit: VisionTransformer) -> None:
    """Re-initialise ``vit`` in place the way the official SdAE teacher starts: a timm-0.3.2 ``VisionTransformer``.

    timm 0.3.2 (pinned by the official code) initialises: ``pos_embed`` trunc_normal(std .02) as a LEARNABLE table
    (not sin-cos; the per-epoch EMA later pulls it towards the student's fixed sin-cos table), ``cls_token``
    trunc_normal(.02), every Linear weight trunc_normal(.02) with zero bias, LayerNorm 1 / 0, and leaves the patch
    conv at torch's default (kaiming_uniform(a=sqrt(5)), bias uniform +-1/sqrt(fan_in)). The timm pinned here
    changed the cls-token init (std 1e-6) and has no API for a module that is not its own VisionTransformer, so the
    recipe is applied here with timm's functions: ``init_weights_vit_timm`` is the per-Linear rule above.
    The relative-position tables (transfer only) keep their zero init.
    """
    vit.patch_embed.proj.reset_parameters()  # torch's Conv2d default
    trunc_normal_(vit.pos_embed, std=0.02)
    if vit.cls_token is not None:
        trunc_normal_(vit.cls_token, std=0.02)
    for name, m in vit.named_modules():
        if isinstance(m, nn.Linear):
            init_weights_vit_timm(m, name)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor, fold_sizes: tuple[int, ...], cos_dim: str = 'tokens'
                ) -> torch.Tensor:
    """1 - cosine similarity on the masked patches. pred, target: [B, M, D] in ``ids_masked`` order.

    'tokens': the official multi-fold code (``F.cosine_similarity`` default dim=1 on [B*K, n, D]): per fold and
    channel, over the fold's n tokens, averaged over all B*K*D (fold, channel) pairs. Ragged folds are grouped by size
    (the official code instead drops the last ``M % K`` masked patches; at ViT-B/16, 147 = 3 x 49, nothing is dropped).
    'channels': per token, over the D channels, averaged over all B*M tokens (the paper-text reading, and the official
    full-view loss).
    """
    pred, target = pred.float(), target.float()
    if cos_dim == 'channels':
        return (1 - F.cosine_similarity(pred, target, dim=-1)).mean()
    b, _, d = pred.shape
    sims, start = [], 0
    for n in sorted(set(fold_sizes), reverse=True):
        k = fold_sizes.count(n)
        sl = slice(start, start + k * n)
        sims.append(F.cosine_similarity(pred[:, sl].reshape(b * k, n, d), target[:, sl].reshape(b * k, n, d), dim=1))
        start += k * n
    return (1 - torch.cat(sims)).mean()


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """imgs: [B, C, H, W] -> [B, L, p*p*C], MAE's patch layout (row-major patches, (p, p, C) inside a patch)."""
    b, c, h, w = imgs.shape
    assert h % p == 0 and w % p == 0, f'image size {h}x{w} is not a multiple of the patch size {p}'
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum('nchpwq->nhwpqc', x).reshape(b, (h // p) * (w // p), p * p * c)


def _check_kwargs(fn: Any, kwargs: dict, where: str) -> None:
    """Unknown keys -> one error naming the key, the config section and the closest valid name."""
    valid = [k for k in inspect.signature(fn).parameters if k not in ('self', 'args', 'kwargs')]
    for key in kwargs:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ''
            raise ValueError(f"unknown key '{key}' in {where}: {hint}valid keys: {', '.join(valid)}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"model.{name} must be one of {choices}, got {value!r}")


def validate_model_cfg(cfg: dict) -> None:
    """Check a ``model`` config section before anything is built (typos fail here, not deep in a registry)."""
    cfg = dict(cfg)
    cfg.pop('type', None)
    _check_kwargs(MaskedPretrainer.__init__, cfg, 'model')
    _check_kwargs(VisionTransformer.__init__, cfg.get('encoder', {}), 'model.encoder')
    _check_kwargs(MaskedDecoder.__init__, cfg.get('decoder', {}), 'model.decoder')
    if cfg.get('teacher_init') == 'random':  # the name used before 'official' and 'mae' were told apart
        raise ValueError("model.teacher_init='random' is ambiguous and no longer accepted: 'official' is the official "
                         "SdAE random teacher (timm-0.3.2 init, learnable trunc-normal position table), 'mae' an "
                         "independent draw of the student's MAE init (xavier, fixed sin-cos table)")
    for name, choices in (('objective', OBJECTIVES), ('teacher_view', TEACHER_VIEWS),
                          ('teacher_init', TEACHER_INITS), ('cos_dim', COS_DIMS)):
        if name in cfg:
            _check_choice(name, cfg[name], choices)
    # The token-axis cosine is defined over one fold's tokens; the official full-view code path (shrink_num=None)
    # takes the cosine per token over channels. Refused rather than silently computing a third, unofficial loss.
    if cfg.get('objective', 'sdae') == 'sdae' and cfg.get('teacher_view', 'folds') == 'full' \
            and cfg.get('cos_dim', 'tokens') == 'tokens':
        raise ValueError("model.teacher_view='full' needs cos_dim='channels': the official full-view loss "
                         "(shrink_num=None) is the cosine per token over channels; cos_dim='tokens' is the official "
                         "multi-fold loss and is defined over a fold's tokens")


@MODELS.register_module()
class MaskedPretrainer(BaseModel):
    """Masked-image pretraining: SdAE (``objective='sdae'``) or MAE (``objective='mae'``).

    Args:
        encoder: kwargs of :class:`sdae_suite.backbones.vit.VisionTransformer` (student; the teacher: same, drop path
        0). decoder: kwargs of :class:`MaskedDecoder` (``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``).
        mask_ratio: fraction of patches hidden from the student.
        num_folds: K, the number of teacher views the masked patches are split into (SdAE).
        teacher_view: 'folds' (official: K sequences of n masked patches + cls) or 'full' (whole image, the official
            ``shrink_num=None`` path; needs ``cos_dim='channels'``).
        teacher_init: how the teacher starts (it then moves only by EMA of the student encoder):
            'official': its own random init as the official code draws it, timm 0.3.2's ViT init with a learnable
            trunc-normal(.02) position table (see :func:`official_teacher_init_`);
            'mae': an independent draw of the student's own init (MAE's xavier, fixed sin-cos table from step 0);
            'copy': a copy of the student (short runs: the targets are useful from the first step).
        cos_dim: 'tokens' (official multi-fold code, per fold and channel across tokens) or 'channels' (per token
            across channels, the paper-text reading), see :func:`cosine_loss`.
        norm_pix_loss: MAE only, normalise each target patch by its own mean/std.
    """

    def __init__(self, encoder: dict, decoder: dict | None = None, objective: str = 'sdae', mask_ratio: float = 0.75,
                 num_folds: int = 3, teacher_view: str = 'folds', teacher_init: str = 'official',
                 cos_dim: str = 'tokens', norm_pix_loss: bool = True, data_preprocessor: dict | None = None,
                 init_cfg: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        validate_model_cfg(dict(encoder=encoder, decoder=decoder or {}, objective=objective, teacher_view=teacher_view,
                                teacher_init=teacher_init, cos_dim=cos_dim))
        self.objective, self.mask_ratio, self.num_folds = objective, mask_ratio, num_folds
        self.teacher_view, self.teacher_init, self.cos_dim = teacher_view, teacher_init, cos_dim
        self.norm_pix_loss = norm_pix_loss
        self.encoder_cfg = dict(encoder)
        self.encoder = VisionTransformer(**encoder)
        p, d = self.encoder.patch_size, self.encoder.embed_dim
        out_dim = d if objective == 'sdae' else p * p * encoder.get('in_chans', 3)
        self.decoder = MaskedDecoder(d, self.encoder.grid, out_dim, **(decoder or {}))
        self.teacher: VisionTransformer | None = None
        if objective == 'sdae':
            self.teacher = VisionTransformer(**{**encoder, 'drop_path_rate': 0.0})
            if teacher_init == 'copy':
                self.teacher.load_state_dict(self.encoder.state_dict())
            elif teacher_init == 'official':
                official_teacher_init_(self.teacher)
            # No gradient ever reaches the teacher; its parameters -- the position table included, which EMATeacherHook
            # moves like any other parameter -- change only by EMA.
            self.teacher.requires_grad_(False)

    @property
    def arch(self) -> dict:
        """The six numbers (``ARCH_KEYS`` of the ViT) the transfer backbone needs (``meta['sdae']['arch']``)."""
        e = self.encoder
        defaults = {k: v.default for k, v in inspect.signature(VisionTransformer.__init__).parameters.items()}
        cfg = {**defaults, **self.encoder_cfg}
        return dict(img_size=cfg['img_size'], patch_size=e.patch_size, embed_dim=e.embed_dim, depth=e.depth,
                    num_heads=cfg['num_heads'], mlp_ratio=cfg['mlp_ratio'])

    @torch.no_grad()
    def teacher_targets(self, imgs: torch.Tensor, plan: MaskPlan) -> torch.Tensor:
        """Standardised teacher features of the masked patches, [B, M, D] in ``plan.ids_masked`` order.

        'folds': all B*K fold sequences go through the teacher as one batch per fold size (one call, or two when the
        folds are ragged), so there is no Python loop over samples or folds.
        """
        assert self.teacher is not None
        b = imgs.shape[0]
        if self.teacher_view == 'full':
            feats = self.teacher(imgs)[:, 1:]
            feats = torch.gather(feats, 1, plan.ids_masked.unsqueeze(-1).expand(-1, -1, feats.shape[-1]))
        else:
            tokens, _ = self.teacher.embed(imgs)
            feats = torch.cat([self.teacher.forward_subset(tokens, idx)[:, 1:].reshape(b, -1, tokens.shape[-1])
                               for idx in plan.fold_groups()], dim=1)
        return standardize(feats)

    def loss(self, imgs: torch.Tensor) -> dict[str, torch.Tensor]:
        """imgs: [B, C, H, W] normalised -> {'loss': scalar}."""
        tokens, grid = self.encoder.embed(imgs)
        b, num_patches, _ = tokens.shape
        folds = self.num_folds if self.objective == 'sdae' else 1
        plan = plan_masks(b, num_patches, self.mask_ratio, folds, device=imgs.device)
        latent = self.encoder.forward_subset(tokens, plan.ids_keep)
        pred = self.decoder(latent, plan, grid)
        if self.objective == 'mae':
            target = patchify(imgs, self.encoder.patch_size)
            target = torch.gather(target, 1, plan.ids_masked.unsqueeze(-1).expand(-1, -1, target.shape[-1])).float()
            if self.norm_pix_loss:
                mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
                target = (target - mean) / (var + 1.0e-6) ** 0.5
            return dict(loss=((pred.float() - target) ** 2).mean())
        target = self.teacher_targets(imgs, plan)
        # Logged, not optimised: the spread of the targets across tokens (per channel); a collapse drives it to 0.
        flat = target.flatten(0, 1)  # [B * M, D]
        target_std = flat.std(dim=0).mean()
        # Partial-collapse monitors (pretrain/monitors.py): effective rank of the targets and their mean cosine to the
        # batch mean (the shared direction).
        return dict(loss=cosine_loss(pred, target, plan.fold_sizes, self.cos_dim), target_std=target_std,
                    target_erank=effective_rank(flat), target_mean_cos=mean_cosine_to_mean(flat))

    def forward(self, inputs: torch.Tensor, data_samples: Any = None, mode: str = 'tensor') -> Any:
        """mode 'loss': the training loss dict; 'tensor': the student encoder's normalised tokens [B, 1 + L, D]."""
        if mode == 'loss':
            return self.loss(inputs)
        if mode == 'tensor':
            return self.encoder(inputs)
        raise ValueError(f"MaskedPretrainer.forward: mode must be 'loss' or 'tensor', got {mode!r}")

    def parse_losses(self, losses: dict) -> tuple[torch.Tensor, dict]:
        # Checked here because mmengine's DDP wrapper calls parse_losses but not our train_step.
        loss, log_vars = super().parse_losses(losses)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f'non-finite training loss ({loss.item()}): stopping before the optimizer step, so the last checkpoint '
                f'is intact. Resume from it with a lower lr (blr=...), gradient clipping '
                f"(--cfg-options optim_wrapper.clip_grad.max_norm=3.0) or bf16 instead of fp16.")
        return loss, log_vars
