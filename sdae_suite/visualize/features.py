"""What a ViT checkpoint attends to and how its patch features group: last-block cls-to-patch attention per head
(and their mean), and the first three PCA components of the patch features shown as RGB.

The ViT is ``sdae_suite.backbones.vit.VisionTransformer``. It attends through ``F.scaled_dot_product_attention``, which
returns no weights, so the weights are recomputed from the input of the last block's attention, caught by a forward
hook: softmax(q k^T / sqrt(d) + bias) with the block's own ``qkv`` layer (:func:`attention_weights`). The model is not
forked or patched.

Maps as shown:
- attention: the cls query's weights over the patch tokens, renormalised over the patches (its weight on itself
  removed) so that every map sums to 1 and maps of different checkpoints share a scale; mean = mean over heads.
- PCA: fitted jointly over the whole image set per checkpoint on the final (normed) patch tokens, components 1-3 as
  R, G, B, each min-max scaled over the set. Plain PCA, no foreground threshold: thresholding the first component
  (as DINOv2's figures do) presumes that it separates objects from background, which an untrained or weakly trained
  encoder's does not; a threshold would then hide what the component does show.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sdae_suite.backbones.pretrained import CheckpointMismatchError, load_pretrained, read_backbone_state
from sdae_suite.backbones.vit import Attention, VisionTransformer, normalize_pixels
from sdae_suite.contracts import BACKBONE_FORMAT, IMAGE_EXTENSIONS, RANDOM_INIT

# The pretraining data preprocessor's normalisation (RGB, 0-255), as every checkpoint here was trained with.
RANDOM = 'random'


@dataclass
class Encoder:
    name: str  # row label
    model: VisionTransformer
    source: str  # checkpoint path or 'random init (seed N)'
    layout: str
    arch: dict[str, Any]


@dataclass
class FeatureMaps:
    """Maps of one checkpoint over an image set of B images with a gh x gw patch grid."""
    attention: np.ndarray  # [B, heads, gh, gw], each map sums to 1
    pca: np.ndarray  # [B, gh, gw, 3] in [0, 1]
    explained: np.ndarray  # [3] fraction of the patch-feature variance of each component


# ---------------------------------------------------------------- checkpoints

def _arch_from_state(sd: dict[str, torch.Tensor], meta_arch: dict[str, Any], num_heads: int | None
                     ) -> dict[str, Any]:
    """Architecture of a timm-named encoder state dict: the file's metadata where it has it, the tensor shapes
    otherwise. The head count is not in the shapes: the metadata's, ``num_heads``, or timm's ViT convention of 64
    channels per head (ViT-Ti/S/B/L and the demo ViT all follow it)."""
    w = sd['patch_embed.proj.weight']  # [D, C, p, p]
    embed_dim, patch = int(w.shape[0]), int(w.shape[-1])
    depth = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('blocks.'))
    grid = sd['pos_embed'].shape[1] - 1
    side = math.isqrt(grid)
    arch = {'img_size': meta_arch.get('img_size') or (side * patch if side * side == grid else 224),
            'patch_size': meta_arch.get('patch_size') or patch, 'embed_dim': embed_dim, 'depth': depth,
            'num_heads': num_heads or meta_arch.get('num_heads') or max(embed_dim // 64, 1),
            'mlp_ratio': sd['blocks.0.mlp.fc1.weight'].shape[0] / embed_dim,
            'qkv_bias': 'blocks.0.attn.qkv.bias' in sd,
            'use_rel_pos_bias': any(k.endswith('rel_pos.table') for k in sd),
            'with_cls_token': 'cls_token' in sd}
    return arch


def build_model(arch: dict[str, Any]) -> VisionTransformer:
    # Global attention in every block: maps of the whole image (a ViTDet fine-tune's windows are not rebuilt).
    return VisionTransformer(img_size=arch['img_size'], patch_size=arch['patch_size'], embed_dim=arch['embed_dim'],
                             depth=arch['depth'], num_heads=arch['num_heads'], mlp_ratio=arch['mlp_ratio'],
                             qkv_bias=arch.get('qkv_bias', True), pos_embed='learned',
                             use_rel_pos_bias=arch.get('use_rel_pos_bias', False),
                             with_cls_token=arch.get('with_cls_token', True)).eval()


def _default_name(meta: dict | None, path: str) -> str:
    if meta and meta.get('format') == BACKBONE_FORMAT:
        return f"{meta.get('method')} {meta.get('epoch')}ep {meta.get('branch') or ''}".strip()
    sdae = (meta or {}).get('sdae') or {}
    if sdae.get('method'):
        return f"{sdae['method']} {sdae.get('epoch', '?')}ep"
    return Path(path).stem


def load_encoder(spec: str, branch: str = 'student', num_heads: int | None = None) -> Encoder:
    """``spec``: ``PATH`` or ``NAME=PATH``, any layout ``sdae_suite.backbones.pretrained`` reads."""
    name, _, path = spec.partition('=') if '=' in spec and not Path(spec).exists() else ('', '', spec)
    if not Path(path).is_file():
        raise SystemExit(f'[visualize_features] checkpoint not found: {path} (pass a checkpoint file, NAME=FILE, or '
                         f'{RANDOM!r} for random init)')
    try:
        sd, report = read_backbone_state(path, branch)
    except CheckpointMismatchError as e:
        raise SystemExit(f'[visualize_features] {e}') from None
    meta = report.meta or {}
    meta_arch = meta.get('arch') or (meta.get('sdae') or {}).get('arch') or {}
    if 'patch_embed.proj.weight' not in sd or 'pos_embed' not in sd:
        raise SystemExit(f'[visualize_features] {path} ({report.layout}): no patch_embed.proj.weight / pos_embed: not '
                         f'a ViT encoder this tool can draw')
    arch = _arch_from_state(sd, meta_arch, num_heads)
    if not arch['with_cls_token']:
        raise SystemExit(f'[visualize_features] {path} ({report.layout}) has no cls_token: cls-to-patch attention '
                         f'needs one. Pass the pretraining checkpoint (or its export) instead of this one.')
    model = build_model(arch)
    load_pretrained(model, path, branch)
    return Encoder(name or _default_name(report.meta, path), model, path, report.layout, arch)


def random_encoder(arch: dict[str, Any], seed: int, name: str = RANDOM_INIT) -> Encoder:
    """The architecture's own init (MAE's: xavier, small-normal cls token), seeded."""
    torch.manual_seed(seed)
    return Encoder(name, build_model(arch), f'{RANDOM_INIT} (seed {seed})', RANDOM_INIT, dict(arch))


# ---------------------------------------------------------------- images

def list_images(folder: Path, num: int) -> list[Path]:
    """The first ``num`` images of ``folder`` in name order (recursively if it has none at its top level)."""
    if not folder.is_dir():
        raise SystemExit(f'[visualize_features] --images {folder}: not a folder (pass a folder of images, e.g. '
                         f'data/demo/coco/val; `make data` creates the demo data)')
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    files = files or sorted(p for p in folder.rglob('*') if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise SystemExit(f'[visualize_features] --images {folder}: no {"/".join(IMAGE_EXTENSIONS)} file in it')
    return files[:num]


def load_images(paths: list[Path], size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Resize (not crop: the whole scene stays in view) to size x size. Returns (normalised [B, 3, S, S] float,
    uint8 [B, S, S, 3] for display)."""
    from PIL import Image

    shown = []
    for p in paths:
        try:
            with Image.open(p) as im:
                shown.append(np.asarray(im.convert('RGB').resize((size, size), Image.BICUBIC)))
        except OSError as e:
            raise SystemExit(f'[visualize_features] {p}: not a readable image ({e}); remove it from --images') from None
    rgb = np.stack(shown)
    x = normalize_pixels(torch.from_numpy(rgb).permute(0, 3, 1, 2))
    return x, rgb


# ---------------------------------------------------------------- maps

def attention_weights(attn: Attention, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The attention probabilities that ``attn`` (an SDPA module, which returns none) applies to its input.

    x: [B, N, D] (the module's input); bias: additive [heads, N, N] or None. Returns [B, heads, N, N], rows summing
    to 1. Same head split as ``Attention.forward`` (qkv -> [3, B, heads, N, d]).
    """
    b, n, d = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, d // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    logits = (q @ k.transpose(-2, -1)) * (d // attn.num_heads) ** -0.5
    if bias is not None:
        logits = logits + bias.to(logits.dtype).unsqueeze(0)
    return logits.softmax(dim=-1)


@torch.no_grad()
def last_block_maps(model: VisionTransformer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """x: [B, 3, H, W] -> (last-block attention [B, heads, N, N], final patch tokens [B, L, D], patch grid), with
    N = 1 + L (cls first)."""
    if model.num_prefix != 1:
        raise ValueError('cls-to-patch attention needs a model built with a cls token')
    caught: dict[str, Any] = {}

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        caught['x'] = args[0]
        caught['bias'] = args[1] if len(args) > 1 else kwargs.get('bias')

    handle = model.blocks[-1].attn.register_forward_hook(hook, with_kwargs=True)
    try:
        tokens = model(x)
    finally:
        handle.remove()
    grid = model.grid_of(x.shape[-2:])
    if caught['x'].shape[1] != 1 + grid[0] * grid[1]:  # a windowed last block attends within windows only
        raise ValueError(f'the last block attended over {caught["x"].shape[1]} tokens, not the whole image\'s '
                         f'{1 + grid[0] * grid[1]}: it is a window-attention block')
    return attention_weights(model.blocks[-1].attn, caught['x'], caught['bias']), tokens[:, 1:], grid


def cls_attention(attn: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """attn: [B, heads, 1 + L, 1 + L] -> cls-to-patch maps [B, heads, gh, gw], renormalised over the L patches."""
    a = attn[:, :, 0, 1:]
    a = a / a.sum(dim=-1, keepdim=True)
    return a.reshape(*a.shape[:2], *grid)


def joint_pca(features: torch.Tensor, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """features: [B, L, D] -> (projections on the first ``n`` components, each min-max scaled to [0, 1] over the set:
    [B, L, n]; explained variance ratios [n]). One fit over all B * L patches, so colours compare across images.
    Signs follow sklearn's svd_flip (largest loading positive): deterministic, unlike raw SVD output."""
    b, length, d = features.shape
    if d < n or b * length < n:
        raise ValueError(f'PCA with {n} components needs >= {n} patches and channels, got {b * length} x {d}')
    x = features.reshape(b * length, d).double()
    x = x - x.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    comps = vh[:n]
    signs = torch.sign(comps[torch.arange(n), comps.abs().argmax(dim=1)])
    comps = comps * signs[:, None]
    proj = x @ comps.T
    lo, hi = proj.min(dim=0).values, proj.max(dim=0).values
    proj = (proj - lo) / (hi - lo).clamp_min(1e-12)
    var = s ** 2
    return proj.reshape(b, length, n).float(), (var[:n] / var.sum().clamp_min(1e-12)).float()


def feature_maps(model: VisionTransformer, x: torch.Tensor) -> FeatureMaps:
    """x: normalised images [B, 3, H, W] -> the maps of one checkpoint."""
    attn, patches, grid = last_block_maps(model, x)
    pca, explained = joint_pca(patches)
    return FeatureMaps(attention=cls_attention(attn, grid).numpy(),
                       pca=pca.reshape(x.shape[0], *grid, 3).numpy(), explained=explained.numpy())


# ---------------------------------------------------------------- figures

def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def attention_figure(encoders: list[Encoder], maps: list[FeatureMaps], rgb: np.ndarray, names: list[str]):
    """One row per checkpoint (plus the images on top); per image: the mean over heads, then every head."""
    import matplotlib.pyplot as plt

    heads = max(m.attention.shape[1] for m in maps)
    per = heads + 1
    n_img = rgb.shape[0]
    fig, axes = plt.subplots(1 + len(maps), n_img * per, figsize=(1.15 * n_img * per, 1.25 * (1 + len(maps))),
                             squeeze=False)
    for i in range(n_img):
        for j in range(per):
            ax = axes[0, i * per + j]
            _off(ax)
            if j == 0:
                ax.imshow(rgb[i])
                ax.set_title(names[i], fontsize=6)
    for r, (enc, m) in enumerate(zip(encoders, maps), start=1):
        for i in range(n_img):
            stack = [m.attention[i].mean(0)] + list(m.attention[i])
            for j in range(per):
                ax = axes[r, i * per + j]
                _off(ax)
                if j < len(stack):
                    ax.imshow(stack[j], cmap='inferno', interpolation='nearest')
                    if r == 1:
                        ax.set_title('mean' if j == 0 else f'head {j}', fontsize=6)
        axes[r, 0].set_ylabel(enc.name, fontsize=7)
    fig.tight_layout(pad=0.2)
    return fig


def pca_figure(encoders: list[Encoder], maps: list[FeatureMaps], rgb: np.ndarray, names: list[str]):
    import matplotlib.pyplot as plt

    n_img = rgb.shape[0]
    fig, axes = plt.subplots(1 + len(maps), n_img, figsize=(1.5 * n_img + 0.6, 1.5 * (1 + len(maps))), squeeze=False)
    for i in range(n_img):
        _off(axes[0, i])
        axes[0, i].imshow(rgb[i])
        axes[0, i].set_title(names[i], fontsize=6)
    for r, (enc, m) in enumerate(zip(encoders, maps), start=1):
        for i in range(n_img):
            _off(axes[r, i])
            axes[r, i].imshow(m.pca[i], interpolation='nearest')
        axes[r, 0].set_ylabel(f'{enc.name}\n(var {", ".join(f"{v:.0%}" for v in m.explained)})', fontsize=6)
    fig.tight_layout(pad=0.2)
    return fig


def _short_path(path: str) -> str:
    """Relative to the current folder when inside it, absolute otherwise (never '../../..')."""
    rel = os.path.relpath(path)
    return os.path.abspath(path) if rel.startswith('..') else rel


def visualize(specs: list[str], images: Path, out: Path, num_images: int = 4, size: int | None = None,
              seed: int = 0, branch: str = 'student', num_heads: int | None = None) -> Path:
    """The whole tool: maps of every checkpoint in ``specs`` (paths, NAME=PATH or 'random') on the first
    ``num_images`` images of ``images``; writes attention.png, pca.png and visuals.json into ``out``."""
    from sdae_suite.visualize.manifest import save_figure, write_manifest

    loaded: list[Encoder | None] = [None if s == RANDOM else load_encoder(s, branch, num_heads) for s in specs]
    first = next((e for e in loaded if e is not None), None)
    if first is None:
        raise SystemExit(f'[visualize_features] {RANDOM!r} alone has no architecture: pass at least one checkpoint '
                         f'(random init takes its architecture)')
    encoders = [e if e is not None else random_encoder(first.arch, seed) for e in loaded]
    size = size or int(first.arch['img_size'] if isinstance(first.arch['img_size'], int)
                       else first.arch['img_size'][0])
    paths = list_images(images, num_images)
    x, rgb = load_images(paths, size)
    maps = [feature_maps(e.model, x) for e in encoders]
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use('Agg')
    names = [p.name for p in paths]
    save_figure(attention_figure(encoders, maps, rgb, names), out / 'attention.png')
    save_figure(pca_figure(encoders, maps, rgb, names), out / 'pca.png')
    grid = maps[0].pca.shape[1:3]
    rows = ', '.join(e.source if e.layout == RANDOM_INIT else f'{e.name} ({_short_path(e.source)})'
                     for e in encoders)
    caption = (f'{len(paths)} images from {images}, resized to {size} px ({grid[0]}x{grid[1]} patches). Rows: '
               f'{rows}.')
    return write_manifest(out, 'What the encoders see', [
        {'file': 'attention.png', 'title': 'Last-block cls attention per head',
         'caption': caption + ' The cls query\'s attention over the patches, renormalised to sum to 1 (its weight on '
                    'itself removed); first column per image: the mean over heads.'},
        {'file': 'pca.png', 'title': 'Patch-feature PCA (components 1-3 as RGB)',
         'caption': caption + ' PCA of the final patch tokens, fitted per encoder jointly over the images; each '
                    'component min-max scaled over the set; no foreground threshold. Percentages: variance explained.'},
    ], {'kind': 'features', 'images': [str(p) for p in paths], 'size': size, 'seed': seed,
        'rows': [{'name': e.name, 'source': e.source, 'layout': e.layout, 'arch': e.arch} for e in encoders]})
