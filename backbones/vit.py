"""The one Vision Transformer of the project: SdAE/MAE pretraining and COCO/ADE20K transfer both build on it.

Parameter names are timm's (and therefore MAE's / official SdAE's): ``cls_token``, ``pos_embed``,
``patch_embed.proj.*``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``, ``norm.*``.
A timm ``vit_*_patch16_*`` state dict loads into it unchanged.

Written by hand (not ``timm.models.VisionTransformer``) because transfer needs, in the same block, window attention
with a list of global blocks (ViTDet), two kinds of zero-initialised relative positions -- BEiT's per-head scalar bias
table (mmseg MAE / BEiT UperNet) and ViTDet's decomposed, query-dependent ``rel_pos_h`` / ``rel_pos_w`` -- and
attention over an arbitrary subset of patches (MAE masking, SdAE multi-fold teacher views); timm's Block has none of
these together. The building blocks themselves (PatchEmbed, Mlp, DropPath, init, and the decomposed relative position
bias of timm's SAM ViT, ``get_decomposed_rel_pos_bias``) are timm's. Without relative positions the attention is
exactly the pretraining one (no extra work, no extra parameters).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from timm.layers import DropPath, Mlp, PatchEmbed
from timm.models.vision_transformer_sam import get_decomposed_rel_pos_bias
from torch import nn

logger = logging.getLogger(__name__)

Grid = tuple[int, int]
# The pixel normalisation every encoder of the suite is trained, probed and pictured with: ImageNet's mean / std on the
# 0-255 scale, as the data preprocessors of the transfer configs apply it.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
# The constructor arguments that define an encoder's architecture (the 'arch' of a checkpoint's meta).
ARCH_KEYS = ('img_size', 'patch_size', 'embed_dim', 'depth', 'num_heads', 'mlp_ratio')


def normalize_pixels(x: torch.Tensor) -> torch.Tensor:
    """x: [N, 3, H, W] on the 0-255 scale, any dtype -> float32 normalised by PIXEL_MEAN / PIXEL_STD, on x's device."""
    mean = torch.tensor(PIXEL_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD, device=x.device).view(1, 3, 1, 1)
    return (x.float() - mean) / std


def sincos_pos_embed_2d(embed_dim: int, grid: Grid, cls_token: bool = True) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos position embedding. Returns [1, (1 +) H*W, D] (cls position is zeros).

    Half the channels encode the row, half the column, exactly as facebookresearch/mae ``get_2d_sincos_pos_embed``
    (so checkpoints pretrained there and here carry the same table).
    """
    assert embed_dim % 4 == 0, f'sin-cos position embedding needs embed_dim % 4 == 0, got {embed_dim}'
    h, w = grid
    gw, gh = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 4, dtype=np.float64) / (embed_dim / 4.0))

    def encode(pos: np.ndarray) -> np.ndarray:  # [M] -> [M, D/2]
        out = np.einsum('m,d->md', pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([encode(gw), encode(gh)], axis=1)  # MAE order: first half from grid[0] (= w index)
    if cls_token:
        emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


def resize_pos_embed(pos_embed: torch.Tensor, old_grid: Grid, new_grid: Grid, num_prefix: int = 1) -> torch.Tensor:
    """Bicubically resize the patch part of ``pos_embed`` [1, P + h*w, D] from ``old_grid`` to ``new_grid``."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, patch = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    d = patch.shape[-1]
    patch = patch.reshape(1, old_grid[0], old_grid[1], d).permute(0, 3, 1, 2)
    patch = F.interpolate(patch.float(), size=tuple(new_grid), mode='bicubic', align_corners=False)
    patch = patch.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], d).to(pos_embed.dtype)
    return torch.cat([prefix, patch], dim=1)


def window_partition(x: torch.Tensor, grid: Grid, window: int) -> tuple[torch.Tensor, Grid]:
    """x: [B, H*W, D] -> windows [B * nW, window*window, D] (zero-padded to a multiple of ``window``)."""
    b, _, d = x.shape
    h, w = grid
    x = x.view(b, h, w, d)
    ph, pw = (window - h % window) % window, (window - w % window) % window
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    x = x.view(b, hp // window, window, wp // window, window, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, d), (hp, wp)


def window_unpartition(x: torch.Tensor, window: int, padded: Grid, grid: Grid) -> torch.Tensor:
    """Inverse of :func:`window_partition`: [B * nW, window*window, D] -> [B, H*W, D]."""
    hp, wp = padded
    d = x.shape[-1]
    b = x.shape[0] // ((hp // window) * (wp // window))
    x = x.view(b, hp // window, wp // window, window, window, d).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, hp, wp, d)[:, : grid[0], : grid[1]]
    return x.reshape(b, grid[0] * grid[1], d)


class RelativePositionBias(nn.Module):
    """BEiT-style learned relative position bias over a ``grid`` of patches, zero-initialised.

    The table is [(2H-1)*(2W-1), heads]; when attention runs over another grid size (detection inputs vary) the table is
    resized bicubically, as ViTDet does for its relative position tables. Pairs involving prefix (cls) tokens get 0.
    """

    def __init__(self, grid: Grid, num_heads: int):
        super().__init__()
        self.grid = tuple(grid)
        self.table = nn.Parameter(torch.zeros((2 * grid[0] - 1) * (2 * grid[1] - 1), num_heads))

    def forward(self, grid: Grid, num_prefix: int = 0) -> torch.Tensor:
        """Returns the additive attention bias [heads, P + H*W, P + H*W]."""
        h, w = grid
        th, tw = 2 * self.grid[0] - 1, 2 * self.grid[1] - 1
        table = self.table
        if (h, w) != self.grid:
            table = table.t().reshape(1, -1, th, tw)
            table = F.interpolate(table, size=(2 * h - 1, 2 * w - 1), mode='bicubic', align_corners=False)
            table = table.reshape(-1, (2 * h - 1) * (2 * w - 1)).t()
        coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')).flatten(1)  # [2, HW]
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # [HW, HW, 2]
        index = (rel[..., 0] + h - 1) * (2 * w - 1) + (rel[..., 1] + w - 1)
        bias = table[index.to(table.device)].permute(2, 0, 1)  # [heads, HW, HW]
        if num_prefix:
            bias = F.pad(bias, (num_prefix, 0, num_prefix, 0))
        return bias


class Attention(nn.Module):
    """Multi-head self-attention with timm's parameter names (``qkv``, ``proj``); fused SDPA kernel.

    ``rel_pos_size`` (ViTDet / SAM): decomposed relative positions over an (h, w) token grid -- per-axis tables
    ``rel_pos_h`` [2h-1, head_dim] and ``rel_pos_w`` [2w-1, head_dim], zero-initialised, turned into the query-dependent
    bias q·R_h + q·R_w by timm's ``get_decomposed_rel_pos_bias`` (tables linearly interpolated when the attention runs
    over another grid size, as ViTDet's ``get_rel_pos``). The bias goes to SDPA as ``attn_mask``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, rel_pos_size: Grid | None = None):
        super().__init__()
        assert dim % num_heads == 0, f'dim {dim} is not divisible by num_heads {num_heads}'
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_size = tuple(rel_pos_size) if rel_pos_size else None
        if self.rel_pos_size:
            head_dim = dim // num_heads
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * self.rel_pos_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * self.rel_pos_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, size: Grid | None = None) -> torch.Tensor:
        """x: [B, N, D]; bias: additive [heads, N, N] or None; size: the (h, w) grid of the N tokens, for the decomposed
        relative positions (None: tokens without a grid, e.g. a masked subset; no relative positions then)."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.rel_pos_size and size is not None:
            if bias is not None:
                raise ValueError('BEiT relative position bias and ViTDet decomposed relative positions are exclusive')
            # q, k, v stay views of qkv [B, heads, N, head_dim]; only q is copied, to the [B * heads, N, head_dim]
            # layout timm's helper takes (timm's SAM attention copies all three)
            q, k, v = qkv.unbind(0)
            bias = get_decomposed_rel_pos_bias(q.reshape(b * self.num_heads, n, -1), self.rel_pos_h, self.rel_pos_w,
                                               tuple(size), tuple(size))
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.view(b, self.num_heads, n, n))
            return self.proj(x.transpose(1, 2).reshape(b, n, d))
        if bias is not None:
            bias = bias.to(qkv.dtype).unsqueeze(0)
        # unbind, as timm does: three views in one op (indexing qkv[0..2] measured ~3 % slower per fine-tuning step)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block; ``window_size > 0`` makes it a windowed (ViTDet) block over the patch grid.

    ``rel_pos_grid``: BEiT-style scalar bias table for that grid; ``rel_pos_size``: ViTDet decomposed relative
    positions sized for that grid (the window for windowed blocks). At most one of the two.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0,
                 window_size: int = 0, rel_pos_grid: Grid | None = None, rel_pos_size: Grid | None = None):
        super().__init__()
        if rel_pos_grid and rel_pos_size:
            raise ValueError('use either the BEiT relative position bias or decomposed relative positions, not both')
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, rel_pos_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.window_size = window_size
        self.rel_pos = RelativePositionBias(rel_pos_grid, num_heads) if rel_pos_grid else None

    def forward(self, x: torch.Tensor, grid: Grid | None = None, num_prefix: int = 1) -> torch.Tensor:
        """x: [B, P + L, D] with P prefix (cls) tokens. ``grid`` is the patch grid when the L tokens form a full map
        (needed by window attention and relative positions); None for subsets of patches (masked pretraining)."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size and grid is not None:
            assert num_prefix == 0, 'window attention runs on patch tokens only (build the backbone without cls token)'
            window = (self.window_size, self.window_size)
            x, padded = window_partition(x, grid, self.window_size)
            bias = self.rel_pos(window) if self.rel_pos is not None else None
            x = window_unpartition(self.attn(x, bias, window), self.window_size, padded, grid)
        else:
            bias = self.rel_pos(grid, num_prefix) if self.rel_pos is not None and grid is not None else None
            x = self.attn(x, bias, grid)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """Plain ViT encoder.

    Args:
        img_size: the training resolution; sets the stored position-embedding grid.
        pos_embed: 'sincos' (fixed, MAE/SdAE pretraining) or 'learned' (transfer: initialised from the checkpoint).
        window_size / global_attn_indexes: ViTDet window attention in every block except the listed ones.
        use_rel_pos_bias: BEiT-style zero-initialised scalar relative position bias in every block (over the window or
            the full grid; the global tables are resized bicubically for other grids).
        use_rel_pos: ViTDet's decomposed relative positions (``blocks.N.attn.rel_pos_h`` / ``rel_pos_w``), zero-
            initialised, in every block: windowed blocks sized for the window, global blocks for the patch grid of
            ``rel_pos_img_size`` (default ``img_size``; ViTDet: 1024 while the position table stays at 224). Needs
            ``with_cls_token=False``.
        with_cp: activation checkpointing per block (saves memory, costs one extra forward).
    """

    def __init__(self, img_size: int | Sequence[int] = 224, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path_rate: float = 0.0, pos_embed: str = 'sincos',
                 with_cls_token: bool = True, window_size: int = 0, global_attn_indexes: Sequence[int] = (),
                 use_rel_pos_bias: bool = False, with_cp: bool = False, use_rel_pos: bool = False,
                 rel_pos_img_size: int | Sequence[int] | None = None):
        super().__init__()
        if pos_embed not in ('sincos', 'learned'):
            raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {pos_embed!r}")
        if use_rel_pos and use_rel_pos_bias:
            raise ValueError('use_rel_pos (ViTDet decomposed) and use_rel_pos_bias (BEiT table) are exclusive')
        if use_rel_pos and with_cls_token:
            raise ValueError('decomposed relative positions (use_rel_pos) run on patch tokens only: set '
                             'with_cls_token=False')
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        rel_img = img_size if rel_pos_img_size is None else (
            (rel_pos_img_size,) * 2 if isinstance(rel_pos_img_size, int) else tuple(rel_pos_img_size))
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.with_cp = with_cp
        self.num_prefix = 1 if with_cls_token else 0
        # Sizes that are not a multiple of the patch size are zero-padded (needed for detection inputs).
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, strict_img_size=False,
                                      dynamic_img_pad=True)
        self.grid: Grid = (math.ceil(img_size[0] / patch_size), math.ceil(img_size[1] / patch_size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if with_cls_token else None
        # The stored table always has a cls slot (timm / MAE layout) so checkpoints load either way.
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(embed_dim, self.grid), requires_grad=pos_embed == 'learned')
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList()
        for i in range(depth):
            window = window_size if (window_size and i not in global_attn_indexes) else 0
            rel_grid = ((window, window) if window else self.grid) if use_rel_pos_bias else None
            rel_size = ((window, window) if window else self.grid_of(rel_img)) if use_rel_pos else None
            self.blocks.append(Block(embed_dim, num_heads, mlp_ratio, qkv_bias, dpr[i], window, rel_grid, rel_size))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        # MAE's init: xavier on the patch projection as a linear layer, small normal cls token, xavier linears.
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ---- pieces -------------------------------------------------------------------------------------------------
    def grid_of(self, hw: Sequence[int]) -> Grid:
        return (math.ceil(hw[0] / self.patch_size), math.ceil(hw[1] / self.patch_size))

    def patch_pos_embed(self, grid: Grid) -> torch.Tensor:
        """Position embedding of the patches for ``grid``: [1, H*W, D] (resized from the stored grid if needed)."""
        return resize_pos_embed(self.pos_embed, self.grid, grid)[:, 1:]

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        """x: [B, C, H, W] -> patch tokens with position embedding [B, L, D], and the patch grid."""
        grid = self.grid_of(x.shape[-2:])
        return self.patch_embed(x) + self.patch_pos_embed(grid), grid

    def prepend_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [B, L, D] -> [B, 1 + L, D] (no-op without cls token)."""
        if self.cls_token is None:
            return tokens
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def run_blocks(self, x: torch.Tensor, grid: Grid | None = None, out_indices: Sequence[int] = ()
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x: [B, P + L, D] -> (output of the last block, outputs of ``out_indices`` blocks)."""
        outs = []
        for i, blk in enumerate(self.blocks):
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(blk, x, grid, self.num_prefix, use_reentrant=False)
            else:
                x = blk(x, grid, self.num_prefix)
            if i in out_indices:
                outs.append(x)
        return x, outs

    # ---- entry points -------------------------------------------------------------------------------------------
    def forward_subset(self, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Encode a subset of patches per sequence (MAE visible patches, SdAE teacher folds).

        tokens: [B, L, D] from :meth:`embed`; index: [B', K] patch indices with B' = B * r (r sequences per image,
        rows of image b are b*r ... b*r + r - 1). Returns the normalised output [B', P + K, D] (cls first).
        """
        b, length, d = tokens.shape
        if index.shape[0] % b:
            raise ValueError(f'index has {index.shape[0]} rows, not a multiple of the batch size {b}')
        r = index.shape[0] // b
        # Index the flattened tokens instead of repeating them r times: no [B * r, L, D] copy of the whole sequence.
        image = torch.arange(b, device=index.device).repeat_interleave(r)
        x = tokens.reshape(b * length, d)[index + (image * length).unsqueeze(1)]
        x, _ = self.run_blocks(self.prepend_cls(x))
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> normalised tokens [B, P + L, D] of the whole image."""
        tokens, grid = self.embed(x)
        x, _ = self.run_blocks(self.prepend_cls(tokens), grid)
        return self.norm(x)

    def get_layer_depth(self, param_name: str) -> tuple[int, int]:
        """Layer-wise lr decay: (depth of ``param_name``, number of depths). Embeddings 0, block i -> i + 1, rest L + 1.

        Names may carry a prefix (``backbone.``): only the part after the last known root is read.
        """
        num_layers = self.depth + 2
        name = param_name.split('backbone.', 1)[-1]
        if name.startswith(('cls_token', 'pos_embed', 'patch_embed', 'mask_token')):
            return 0, num_layers
        if name.startswith('blocks.'):
            return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers
