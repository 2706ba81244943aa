"""Load ViT weights from any checkpoint layout users bring, strictly, with a report of what was loaded and dropped.

Accepted without conversion (detected from the file's structure, the way timm's ``checkpoint_filter_fn`` absorbs
foreign formats):

=============================  =========================================================================================
layout                         structure
=============================  =========================================================================================
exported backbone (ours)       ``{'state_dict': timm keys, 'meta': {'format': 'sdae-suite/backbone', ...}}``
raw pretraining run (ours)     mmengine checkpoint, ``state_dict`` with ``encoder.`` / ``teacher.`` / ``decoder.``
official SdAE                  ``{'model': timm keys + decoder_*, 'model_teacher': timm keys, ...}``
official MAE                   ``{'model': timm keys (+ decoder_*, mask_token or head, fc_norm)}``
timm                           a plain state dict with timm keys
mmpretrain / mmselfsup         ``{'state_dict': {'backbone.layers.N.ln1...', 'neck.*', 'head.*'}}``
mmdet / mmseg (timm names)     ``{'state_dict': {'backbone.blocks.N...', 'neck.*', '*_head.*'}}``
=============================  =========================================================================================

Any of them may also come as ``.safetensors`` (chosen by the file name; never unpickled): our export's twin file
(``meta`` as JSON in the header, read back as the same ``{'state_dict', 'meta'}``) and timm / Hugging Face hub
``model.safetensors`` files (a flat state dict, read as the timm layout above). :func:`read_checkpoint` is the one
place that turns a file into the structure the layouts above are detected from.

Decoder, other-branch, head and optimiser entries are dropped on purpose and reported by category. A backbone weight the
checkpoint does not provide, a key that maps to nothing, or a shape that does not fit is an error listing every such
key. A file holding both ``model`` and ``state_dict`` is an error too (which one is the backbone is a guess), unless
the caller picks one with ``key='model'`` or ``key='state_dict'`` (``init_cfg=dict(..., key=...)``).
The only parameters allowed to be absent are relative position tables (zero-initialised by design): BEiT's
``blocks.N.rel_pos.table`` and ViTDet's decomposed ``blocks.N.attn.rel_pos_h`` / ``rel_pos_w``. Decomposed tables that
the checkpoint does have are loaded, linearly interpolated to the model's size when they differ (ViTDet's
``get_rel_pos`` rule).
"""
from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import nn

from sdae_suite.contracts import BACKBONE_FORMAT, BackboneMeta
from sdae_suite.engine.checkpoint_io import safe_torch_load
from sdae_suite.engine.safetensors_io import SafetensorsFileError, is_safetensors, read_safetensors

from .vit import resize_pos_embed

BRANCHES = ('student', 'teacher')
KEYS = ('model', 'state_dict')
# Parameters a checkpoint may lack: relative position tables, zero-initialised by design (BEiT, ViTDet).
ZERO_INIT_SUFFIXES = ('rel_pos.table', 'attn.rel_pos_h', 'attn.rel_pos_w')


class CheckpointMismatchError(RuntimeError):
    """The checkpoint does not provide exactly the backbone's weights."""


@dataclass
class LoadReport:
    path: str
    layout: str
    branch: str | None = None
    meta: dict | None = None
    dropped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    pos_grid: tuple[int, int] | None = None
    loaded: list[str] = field(default_factory=list)
    zero_init: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f'pretrained weights from {self.path}: layout = {self.layout}'
                 + (f', branch = {self.branch}' if self.branch else '')
                 + f'; loaded {len(self.loaded)} backbone tensors, 0 missing']
        for cat, keys in sorted(self.dropped.items()):
            lines.append(f'  dropped on purpose ({cat}): {len(keys)} keys, e.g. {", ".join(sorted(keys)[:3])}')
        if self.zero_init:
            lines.append(f'  not in the checkpoint, zero-initialised by design: {len(self.zero_init)} relative '
                         f'position tables')
        lines += [f'  {n}' for n in self.notes]
        return '\n'.join(lines)


def _strip(sd: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _tensors(obj: Any, path: str, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointMismatchError(f'{path}: {what} is not a state dict of tensors; this file is not a checkpoint '
                                      f'layout the ViT loader knows (see backbones/pretrained.py for the list).')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in obj.items()}


_MMPRETRAIN_RULES = [  # mmpretrain / mmselfsup VisionTransformer names -> timm names
    (r'^patch_embed\.projection\.', 'patch_embed.proj.'),
    (r'^layers\.(\d+)\.ln1\.', r'blocks.\1.norm1.'),
    (r'^layers\.(\d+)\.ln2\.', r'blocks.\1.norm2.'),
    (r'^layers\.(\d+)\.attn\.(qkv|proj)\.', r'blocks.\1.attn.\2.'),
    (r'^layers\.(\d+)\.ffn\.layers\.0\.0\.', r'blocks.\1.mlp.fc1.'),
    (r'^layers\.(\d+)\.ffn\.layers\.1\.', r'blocks.\1.mlp.fc2.'),
    (r'^ln1\.', 'norm.'),
]


def _from_mmpretrain(sd: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k.startswith('ln2.'):  # the pooled-feature norm of out_type='avg_featmap' (classification head side)
            report.dropped['classification head'].append('backbone.' + k)
            continue
        new = k
        for pat, rep in _MMPRETRAIN_RULES:
            new = re.sub(pat, rep, new)
        out[new] = v
    return out


def _split_prefixed(sd: dict[str, torch.Tensor], keep: str, categories: dict[str, str],
                    report: LoadReport) -> dict[str, torch.Tensor]:
    """Keep keys under ``keep`` (prefix stripped); drop the others into report categories by their prefix."""
    for k in sd:
        if not k.startswith(keep):
            cat = next((c for p, c in categories.items() if k.startswith(p)), 'other non-backbone modules')
            report.dropped[cat].append(k)
    return _strip(sd, keep)


def _drop_timm_extras(sd: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
    """Remove MAE/SdAE decoder and classification-head entries from a timm-named dict."""
    out = {}
    for k, v in sd.items():
        if k.startswith(('decoder', 'mask_token')):
            report.dropped['pretraining decoder'].append(k)
        elif k.startswith(('head.', 'fc_norm.', 'head_drop', 'pre_logits')):
            report.dropped['classification head'].append(k)
        else:
            out[k] = v
    return out


def _pick_key(obj: dict, path: str, key: str | None, report: LoadReport) -> dict:
    """Apply the caller's choice between ``model`` and ``state_dict``; refuse to guess when a file holds both."""
    if key not in (None, *KEYS):
        raise ValueError(f"key must be 'model', 'state_dict' or None, got {key!r}")
    both = all(isinstance(obj.get(k), dict) for k in KEYS)
    if key is None:
        if both:
            raise CheckpointMismatchError(
                f"{path}: the file holds both 'model' ({len(obj['model'])} entries) and 'state_dict' "
                f"({len(obj['state_dict'])} entries); which one is the backbone is not guessed. Choose one: "
                f"init_cfg=dict(type='Pretrained', checkpoint=..., key='model') (or key='state_dict').")
        return obj
    if not isinstance(obj.get(key), dict):
        raise CheckpointMismatchError(f"{path}: key={key!r} was asked for, but the file has no {key!r} dict "
                                      f"(top-level keys: {sorted(obj)})")
    # key='state_dict' sets aside both encoders of an official SdAE file; key='model' keeps its teacher
    other = [k for k in (('state_dict',) if key == 'model' else ('model', 'model_teacher')) if k in obj]
    for k in other:
        report.dropped[f'not chosen (key={key!r})'].append(k)
    return {k: v for k, v in obj.items() if k not in other}


def read_checkpoint(path: str | os.PathLike) -> Any:
    """What a checkpoint file holds: a ``.pth`` through the weights-only gate (any location mmengine knows), a local
    ``.safetensors`` as the structure its ``.pth`` twin would have (``{'state_dict', 'meta'}`` when it carries our
    meta, else the flat state dict), so every layout rule below applies to both formats unchanged."""
    # Not left to torch.load: recent torch reads a .safetensors path itself but drops the header (our meta) and raises
    # the library's bare error, and older torch (the suite supports >= 2.6) hands the file to the unpickler.
    if not is_safetensors(path):
        return safe_torch_load(path)
    if '://' in str(path):  # remote schemes are served by mmengine's loaders, which only know torch files
        raise SafetensorsFileError(f'{path}: .safetensors files are read from a local path; download it first (e.g. '
                                   f'`huggingface-cli download REPO model.safetensors`) and pass the local file')
    tensors, meta = read_safetensors(path)
    return tensors if meta is None else {'state_dict': tensors, 'meta': meta}


def read_backbone_state(path: str | os.PathLike, branch: str | None = None, key: str | None = None
                        ) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Read ``path`` and return (timm-named encoder state dict, report). ``branch``: 'student', 'teacher' or None
    (None is allowed only when the file holds a single encoder). ``key``: 'model' or 'state_dict' for a file holding
    both (an error without it), None otherwise."""
    path = str(path)
    if branch not in (None, *BRANCHES):
        raise ValueError(f"branch must be 'student', 'teacher' or None, got {branch!r}")
    obj = read_checkpoint(path)
    if not isinstance(obj, dict):
        raise CheckpointMismatchError(f'{path}: expected a dict checkpoint, got {type(obj).__name__}')
    meta = obj.get('meta') if isinstance(obj.get('meta'), dict) else None
    report = LoadReport(path=path, layout='?', meta=meta)
    obj = _pick_key(obj, path, key, report)

    def need_branch(layout: str) -> str:
        if branch is None:
            raise CheckpointMismatchError(
                f"{path}: this {layout} checkpoint holds both a student and a teacher encoder; choose one explicitly: "
                f"init_cfg=dict(type='Pretrained', checkpoint=..., branch='student') (or 'teacher'), or "
                f"tools/train.py --pretrained CKPT --pretrained-branch student")
        return branch

    top = [k for k in obj if k not in ('state_dict', 'model', 'model_teacher', 'meta')]
    if meta is not None and meta.get('format') == BACKBONE_FORMAT:
        report.layout = f"exported backbone ({meta.get('method')}, epoch {meta.get('epoch')})"
        report.branch = meta.get('branch')
        if branch is not None and meta.get('branch') not in (None, branch):
            report.notes.append(f"NOTE: branch={branch!r} was asked for, but this exported file holds the "
                                f"{meta.get('branch')} encoder (chosen at export time); loading it as exported")
        sd = _tensors(obj['state_dict'], path, "'state_dict'")
    elif isinstance(obj.get('state_dict'), dict) and any(
            k.startswith(('encoder.', 'teacher.')) for k in obj['state_dict']):
        sd_all = _tensors(obj['state_dict'], path, "'state_dict'")
        sdae = (meta or {}).get('sdae', {})
        has_teacher = any(k.startswith('teacher.') for k in sd_all)
        report.layout = f"raw pretraining checkpoint ({sdae.get('method', '?')}, epoch {sdae.get('epoch', '?')})"
        report.branch = need_branch('pretraining') if has_teacher else (branch or 'student')
        if report.branch == 'teacher' and not has_teacher:
            raise CheckpointMismatchError(f"{path}: branch='teacher' asked for, but this {sdae.get('method', '')} "
                                          f"checkpoint has no teacher (no 'teacher.' keys)")
        keep = 'encoder.' if report.branch == 'student' else 'teacher.'
        other = 'teacher.' if keep == 'encoder.' else 'encoder.'
        sd = _split_prefixed(sd_all, keep, {other: f'other branch ({other[:-1]})', 'decoder.': 'pretraining decoder'},
                             report)
        arch = sdae.get('arch') or {}
        if arch.get('img_size') and arch.get('patch_size'):
            s = arch['img_size']
            s = (s, s) if isinstance(s, int) else tuple(s)
            report.pos_grid = (math.ceil(s[0] / arch['patch_size']), math.ceil(s[1] / arch['patch_size']))
    elif isinstance(obj.get('model'), dict) and isinstance(obj.get('model_teacher'), dict):
        report.layout = 'official SdAE (model / model_teacher)'
        report.branch = need_branch('official SdAE')
        chosen, other = ('model', 'model_teacher') if report.branch == 'student' else ('model_teacher', 'model')
        for k in obj[other]:
            cat = 'pretraining decoder' if k.startswith(('decoder', 'mask_token')) else f'other branch ({other})'
            report.dropped[cat].append(f'{other}.{k}')
        sd = _drop_timm_extras(_tensors(obj[chosen], path, f"'{chosen}'"), report)
    elif isinstance(obj.get('model'), dict):
        report.layout = 'official MAE / timm-in-model (model)'
        if branch == 'teacher':
            raise CheckpointMismatchError(f"{path}: branch='teacher' asked for, but this file holds one encoder "
                                          f"('model' only); use branch='student' or None")
        report.branch = 'student'
        sd = _drop_timm_extras(_tensors(obj['model'], path, "'model'"), report)
    elif isinstance(obj.get('state_dict'), dict):
        sd_all = _tensors(obj['state_dict'], path, "'state_dict'")
        if not any(k.startswith('backbone.') for k in sd_all):
            raise CheckpointMismatchError(f'{path}: a state_dict with neither backbone.* nor encoder./teacher. keys; '
                                          f'first keys: {list(sd_all)[:5]}')
        sd = _split_prefixed(sd_all, 'backbone.', {
            'neck.': 'neck / pretraining decoder', 'head.': 'head', 'target_generator.': 'other branch (teacher)',
            'data_preprocessor.': 'data preprocessor'}, report)
        if any(k.startswith('layers.') for k in sd):
            report.layout = 'mmpretrain / mmselfsup (backbone.layers.N...)'
            sd = _from_mmpretrain(sd, report)
        else:
            report.layout = 'mmdet / mmseg / mmengine (backbone.* with timm names)'
        report.branch = 'student'
    else:
        report.layout = 'timm state dict'
        sd = _drop_timm_extras(_tensors(obj, path, 'the file'), report)
        top = []
    if top:
        report.dropped['training state (optimizer, ...)'] += top
    return sd, report


def _checkpoint_grid(sd: dict[str, torch.Tensor], report: LoadReport) -> tuple[int, int]:
    n = sd['pos_embed'].shape[1] - 1
    if report.pos_grid and report.pos_grid[0] * report.pos_grid[1] == n:
        return report.pos_grid
    meta_arch = (report.meta or {}).get('arch') or {}
    if meta_arch.get('img_size') and meta_arch.get('patch_size'):
        s = meta_arch['img_size']
        s = (s, s) if isinstance(s, int) else tuple(s)
        grid = (math.ceil(s[0] / meta_arch['patch_size']), math.ceil(s[1] / meta_arch['patch_size']))
        if grid[0] * grid[1] == n:
            return grid
    side = math.isqrt(n)
    if side * side != n:
        raise CheckpointMismatchError(f'{report.path}: pos_embed has {n} patch positions, not a square grid, and the '
                                      f'file does not say its image size; cannot resize it')
    return side, side


def resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """A decomposed relative position table [L, C] linearly interpolated to [length, C] (ViTDet's ``get_rel_pos``)."""
    if table.shape[0] == length:
        return table
    out = F.interpolate(table.float().t().unsqueeze(0), size=length, mode='linear')
    return out.squeeze(0).t().to(table.dtype)


def adapt_to_model(model: nn.Module, sd: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
    """Fit a timm-named encoder state dict to ``model``: pos-embed grid, cls slot, unused cls token / final norm,
    decomposed relative position table lengths."""
    sd = dict(sd)
    own = model.state_dict()
    resized = []
    for k in [k for k in sd if k.endswith(('attn.rel_pos_h', 'attn.rel_pos_w')) and k in own]:
        t, want = sd[k], own[k]
        if t.ndim == 2 and t.shape[1] == want.shape[1] and t.shape[0] != want.shape[0]:
            sd[k] = resize_rel_pos(t, want.shape[0])
            resized.append(f'{k} {t.shape[0]}->{want.shape[0]}')
    if resized:
        report.notes.append(f'{len(resized)} decomposed relative position tables interpolated linearly to the model '
                            f'grid, e.g. {resized[0]}')
    if 'pos_embed' in sd:
        pe = sd['pos_embed']
        n_model = model.pos_embed.shape[1]
        if pe.ndim == 3 and math.isqrt(pe.shape[1]) ** 2 == pe.shape[1] and 'cls_token' not in sd \
                and pe.shape[1] != n_model:
            sd['pos_embed'] = pe = torch.cat([pe.new_zeros(1, 1, pe.shape[2]), pe], dim=1)  # add the cls slot
            report.notes.append('pos_embed had no cls slot: a zero slot was added (the model stores one)')
        if pe.ndim == 3 and pe.shape[1] != n_model and pe.shape[2] == model.pos_embed.shape[2]:
            old = _checkpoint_grid(sd, report)
            sd['pos_embed'] = resize_pos_embed(pe, old, model.grid)
            report.notes.append(f'pos_embed resized bicubically from the checkpoint grid {old[0]}x{old[1]} to the '
                                f'model grid {model.grid[0]}x{model.grid[1]}')
    if getattr(model, 'cls_token', None) is None and 'cls_token' in sd:
        sd.pop('cls_token')
        report.dropped['cls token (backbone built without one)'].append('cls_token')
    if getattr(model, 'norm', None) is None:
        for k in [k for k in sd if k.startswith('norm.')]:
            sd.pop(k)
            report.dropped["final norm (backbone built with final_norm='none')"].append(k)
    return sd


def load_pretrained(model: nn.Module, path: str | os.PathLike, branch: str | None = None,
                    key: str | None = None) -> LoadReport:
    """Load ``path`` into ``model`` (a :class:`sdae_suite.backbones.vit.VisionTransformer`); raise on any
    missing/unexpected/ mis-shaped backbone key, log and return the report otherwise. ``branch`` / ``key``: see
    :func:`read_backbone_state`."""
    sd, report = read_backbone_state(path, branch, key)
    sd = adapt_to_model(model, sd, report)
    own = model.state_dict()
    allowed_missing = {k for k in own if k.endswith(ZERO_INIT_SUFFIXES)}
    missing = sorted(k for k in own if k not in sd and k not in allowed_missing)
    unexpected = sorted(k for k in sd if k not in own)
    shapes = sorted(f'{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}'
                    for k in sd if k in own and sd[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        def show(keys: list[str]) -> str:
            return '\n    '.join(keys[:40] + ([f'... and {len(keys) - 40} more'] if len(keys) > 40 else []))
        parts = [f'{path} ({report.layout}) does not fit the backbone '
                 f'({type(model).__name__}: embed_dim {model.embed_dim}, depth {model.depth}, '
                 f'patch {model.patch_size}):']
        if missing:
            parts.append(f'  {len(missing)} backbone keys missing from the checkpoint:\n    {show(missing)}')
        if unexpected:
            parts.append(f'  {len(unexpected)} checkpoint keys that match no backbone parameter:\n'
                         f'    {show(unexpected)}')
        if shapes:
            parts.append(f'  {len(shapes)} shape mismatches:\n    {show(shapes)}')
        parts.append('  Fix: build the backbone with the architecture the checkpoint was pretrained with '
                     '(embed_dim / depth / num_heads / patch_size in model.backbone), or pass the right checkpoint.')
        raise CheckpointMismatchError('\n'.join(parts))
    result = model.load_state_dict(sd, strict=False)
    assert set(result.missing_keys) <= allowed_missing and not result.unexpected_keys, result
    report.loaded = sorted(sd)
    report.zero_init = sorted(allowed_missing - set(sd))
    print_log(report.summary(), logger='current')
    return report


def read_meta(path: str | os.PathLike) -> BackboneMeta | None:
    """The ``meta`` of an exported backbone (:class:`sdae_suite.contracts.BackboneMeta`, from its ``.pth`` or its
    ``.safetensors``), None for other layouts."""
    obj = read_checkpoint(path)
    meta = obj.get('meta') if isinstance(obj, dict) else None
    return meta if isinstance(meta, dict) and meta.get('format') == BACKBONE_FORMAT else None
