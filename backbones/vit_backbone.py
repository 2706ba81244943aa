"""The project's ViT as a detection / segmentation backbone, registered for MMDetection and MMSegmentation as
``SdAEViT``.

A thin subclass of :class:`sdae_suite.backbones.vit.VisionTransformer`: the same parameters and blocks as pretraining,
plus what transfer needs: multi-block outputs as feature maps, optional final norm on them, frozen stages, and weight
loading from any supported checkpoint layout (:mod:`sdae_suite.backbones.pretrained`) in ``init_weights``. mmengine's
``Pretrained`` init is deliberately not used: it loads with ``strict=False`` and only logs what it skipped.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from mmengine.logging import print_log
from torch import nn

from .vit import Grid, VisionTransformer, resize_pos_embed


class SdAEViT(VisionTransformer):
    """ViT backbone returning ``len(out_indices)`` feature maps [B, D, H/p, W/p] (patch stride p).

    Args:
        img_size: size whose patch grid the position embedding is stored at; checkpoint tables are resized to it
            (bicubic) when loaded, and resized again on the fly for inputs of another size (logged once).
        out_indices: blocks whose outputs are returned (0-based).
        final_norm: 'none' (no final LayerNorm, as mmseg MAE / ViTDet), 'last' (norm the last output only) or 'all'
            (the shared final norm on every output).
        frozen_stages: -1 trains everything; 0 freezes the embeddings; k > 0 also freezes blocks 0 .. k-1.
        freeze_pos_embed: keep the (loaded) position table fixed, as CAE's detection backbone does with its sin-cos
            table (``requires_grad=False``: no gradient, no optimiser group).
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH, branch='student'|'teacher'|None, key=None|'model'|
            'state_dict')``, or None (random init). ``key`` picks the entry of a file holding both ``model`` and
            ``state_dict`` (such a file is an error otherwise).
        Other arguments: see :class:`sdae_suite.backbones.vit.VisionTransformer` (window attention, BEiT relative
        position bias ``use_rel_pos_bias``, ViTDet decomposed relative positions ``use_rel_pos`` / ``rel_pos_img_size``,
        activation checkpointing, drop path).
    """

    def __init__(self, img_size: int | Sequence[int] = 224, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path_rate: float = 0.1, out_indices: Sequence[int] = (3, 5, 7, 11),
                 final_norm: str = 'none', with_cls_token: bool = True, window_size: int = 0,
                 global_attn_indexes: Sequence[int] = (), use_rel_pos_bias: bool = False, with_cp: bool = False,
                 use_rel_pos: bool = False, rel_pos_img_size: int | Sequence[int] | None = None,
                 frozen_stages: int = -1, freeze_pos_embed: bool = False, init_cfg: dict | None = None):
        super().__init__(img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, qkv_bias,
                         drop_path_rate, pos_embed='learned', with_cls_token=with_cls_token, window_size=window_size,
                         global_attn_indexes=global_attn_indexes, use_rel_pos_bias=use_rel_pos_bias, with_cp=with_cp,
                         use_rel_pos=use_rel_pos, rel_pos_img_size=rel_pos_img_size)
        if final_norm not in ('none', 'last', 'all'):
            raise ValueError(f"final_norm must be 'none', 'last' or 'all', got {final_norm!r}")
        out_indices = [i + depth if i < 0 else i for i in out_indices]
        if not out_indices or any(not 0 <= i < depth for i in out_indices):
            raise ValueError(f'out_indices {list(out_indices)} must lie in [0, {depth - 1}]')
        if window_size and with_cls_token:
            raise ValueError('window attention (ViTDet) runs on patch tokens only: set with_cls_token=False')
        self.out_indices = list(out_indices)
        self.final_norm = final_norm
        if final_norm == 'none':
            self.norm = None  # no unused parameters (DDP would complain); the loader drops a checkpoint's norm.*
        self.frozen_stages = frozen_stages
        self.freeze_pos_embed = freeze_pos_embed
        self.init_cfg = init_cfg
        self.is_init = False
        self._resize_logged = False
        self._freeze()

    # ---- position embedding for arbitrary input sizes ------------------------------------------------------------
    def patch_pos_embed(self, grid: Grid) -> torch.Tensor:
        """[1, H*W, D] for ``grid``; resized bicubically from the stored grid when they differ (logged once)."""
        if tuple(grid) != tuple(self.grid) and not self._resize_logged:
            self._resize_logged = True
            print_log(f'SdAEViT: pos_embed resized bicubically from the {self.grid[0]}x{self.grid[1]} grid to '
                      f'{grid[0]}x{grid[1]} for the input size (done per input size, logged once)', logger='current')
        return resize_pos_embed(self.pos_embed, self.grid, grid)[:, 1:]

    # ---- frozen stages ---------------------------------------------------------------------------------------------
    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.patch_embed, *self.blocks[: self.frozen_stages]]

    def _freeze(self) -> None:
        if self.freeze_pos_embed:
            self.pos_embed.requires_grad = False
        if self.frozen_stages >= 0:
            for p in (self.pos_embed, self.cls_token):
                if p is not None:
                    p.requires_grad = False
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> SdAEViT:
        super().train(mode)
        for m in self._frozen_modules():
            m.eval()  # frozen blocks: no drop path
        return self

    # ---- weights ---------------------------------------------------------------------------------------------------
    def init_weights(self) -> None:
        """Random init happened in ``__init__``; load the pretrained checkpoint of ``init_cfg`` if one is given."""
        from .pretrained import load_pretrained

        cfg = dict(self.init_cfg or {})
        if cfg.get('type') not in (None, 'Pretrained'):
            raise ValueError(f"SdAEViT init_cfg type must be 'Pretrained' (or no init_cfg), got {cfg.get('type')!r}")
        if cfg.get('checkpoint'):
            load_pretrained(self, cfg['checkpoint'], branch=cfg.get('branch'), key=cfg.get('key'))
        else:
            print_log('SdAEViT: no pretrained checkpoint given (init_cfg.checkpoint is None): the backbone starts from '
                      'random weights. Pass --pretrained CKPT to fine-tune a pretrained model.', logger='current',
                      level=logging.WARNING)
        self.is_init = True

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay besides norms and biases under timm's convention
        (``LayerDecayConstructor`` with ``decay_rule='timm'``): position tables and the cls token."""
        names = {'pos_embed', 'cls_token'}
        return names | {n for n, _ in self.named_parameters() if n.endswith(('rel_pos.table', '.rel_pos_h',
                                                                              '.rel_pos_w'))}

    # ---- forward ---------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: [B, C, H, W] -> tuple of [B, D, ceil(H/p), ceil(W/p)], one per ``out_indices`` entry."""
        tokens, grid = self.embed(x)
        _, outs = self.run_blocks(self.prepend_cls(tokens), grid, self.out_indices)
        maps = []
        for k, out in enumerate(outs):
            out = out[:, self.num_prefix:]
            if self.final_norm == 'all' or (self.final_norm == 'last' and k == len(outs) - 1):
                out = self.norm(out)
            b, _, d = out.shape
            maps.append(out.transpose(1, 2).reshape(b, d, grid[0], grid[1]).contiguous())
        return tuple(maps)
