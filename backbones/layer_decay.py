"""Layer-wise learning-rate decay for any model whose backbone can say how deep a parameter is.

mmseg's ``LayerDecayOptimizerConstructor`` picks its rule from the backbone CLASS NAME and parses ``backbone.layers.N``
only; mmdet's ViTDet parses ``blocks.N``. Here the model is asked instead: the first module (the model itself or a
submodule, e.g. ``backbone``) with ``get_layer_depth(name) -> (depth, num_layers)`` decides, so any backbone that
implements it gets layer decay. Parameters outside that module (neck, heads) get the full learning rate.

lr of a parameter at depth d = base_lr * decay ** (num_layers - 1 - d): with the ViT's convention (embeddings 0,
block i -> i + 1, rest L + 1; num_layers = L + 2) that is decay ** (L + 1 - d).
Which parameters get no weight decay is the recipe's, chosen with ``paramwise_cfg.decay_rule`` (each recipe config
states its rule and the source it comes from):

- ``'timm'`` (default): norms and biases (ndim <= 1, ``*.bias``) and the names the depth module lists in
  ``no_weight_decay()`` (pos_embed, cls_token, relative position tables).
- ``'beit'``: BEiT's ``LayerDecayOptimizerConstructor`` as it runs in mmseg (MAE / BEiT UperNet) and in CAE's
  detection code: 1-D tensors and ``*.bias`` only. Their extra ``name in ('pos_embed', 'cls_token')`` test compares
  full names (``backbone.pos_embed``) and never fires, so position tables, cls token and relative position tables
  ARE decayed there, and here under this rule.
- ``'mmdet_vitdet'``: mmdet ``projects/ViTDet`` ``LayerDecayOptimizerConstructor``: only the backbone blocks' norms
  (``backbone.blocks.*`` with ``norm`` in the name) and anything named ``*pos_embed*``; every bias, the neck's and
  heads' norms, the patch embedding and the relative position tables are decayed.
``custom_keys`` works as in mmengine (the longest key that is a substring of the parameter name wins; its ``lr_mult``
and ``decay_mult`` multiply the layer-decayed lr and the weight decay), e.g. a slower neck or no decay on a head.
Any other ``paramwise_cfg`` key is an error rather than silently ignored.
"""
from __future__ import annotations

from collections.abc import Callable

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn


def find_depth_module(model: nn.Module) -> tuple[str, nn.Module]:
    """(prefix, module) of the outermost module exposing ``get_layer_depth``."""
    for name, m in model.named_modules():
        if callable(getattr(m, 'get_layer_depth', None)):
            return name, m
    raise TypeError(f'layer-wise lr decay needs a module with get_layer_depth(param_name) -> (depth, num_layers); '
                    f'{type(model).__name__} has none. Use a backbone that implements it (e.g. SdAEViT), or drop '
                    f"constructor='LayerDecayConstructor' from optim_wrapper.")


SUPPORTED_PARAMWISE_KEYS = ('layer_decay_rate', 'custom_keys', 'decay_rule')
DECAY_RULES = ('timm', 'beit', 'mmdet_vitdet')
SUPPORTED_CUSTOM_KEY_FIELDS = ('lr_mult', 'decay_mult')


def _check_paramwise_cfg(cfg: dict) -> None:
    unknown = sorted(set(cfg) - set(SUPPORTED_PARAMWISE_KEYS))
    if unknown:
        raise ValueError(f'optim_wrapper.paramwise_cfg has {unknown}, which LayerDecayConstructor does not apply; it '
                         f'supports {list(SUPPORTED_PARAMWISE_KEYS)}. Fix the key or remove it.')
    if cfg.get('decay_rule', 'timm') not in DECAY_RULES:
        raise ValueError(f"optim_wrapper.paramwise_cfg.decay_rule={cfg['decay_rule']!r}; supported: "
                         f'{list(DECAY_RULES)} (see backbones/layer_decay.py).')
    for key, fields in cfg.get('custom_keys', {}).items():
        bad = sorted(set(fields) - set(SUPPORTED_CUSTOM_KEY_FIELDS))
        if bad:
            raise ValueError(f'optim_wrapper.paramwise_cfg.custom_keys[{key!r}] has {bad}; supported: '
                             f'{list(SUPPORTED_CUSTOM_KEY_FIELDS)}.')


class LayerDecayConstructor(DefaultOptimWrapperConstructor):
    """``optim_wrapper=dict(constructor='LayerDecayConstructor', paramwise_cfg=dict(layer_decay_rate=0.65), ...)``."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None):
        _check_paramwise_cfg(dict(paramwise_cfg or {}))
        # The default constructor skips add_params when paramwise_cfg is empty; layer decay always needs it.
        super().__init__(optim_wrapper_cfg, dict(paramwise_cfg or {}) or dict(layer_decay_rate=1.0))

    def add_params(self, params: list[dict], module: nn.Module, prefix: str = '', **kwargs) -> None:
        decay = float(self.paramwise_cfg.get('layer_decay_rate', 1.0))
        rule = self.paramwise_cfg.get('decay_rule', 'timm')
        base_lr, base_wd = self.base_lr, self.base_wd or 0.0
        root, depth_module = find_depth_module(module)
        depth_of: Callable[[str], tuple[int, int]] = depth_module.get_layer_depth
        no_wd_names = set(getattr(depth_module, 'no_weight_decay', lambda: set())())
        _, num_layers = depth_of('')
        custom_keys: dict[str, dict] = dict(self.paramwise_cfg.get('custom_keys', {}))
        # mmengine's precedence: longest key first, alphabetical among equal lengths
        custom_order = sorted(sorted(custom_keys), key=len, reverse=True)
        groups: dict[tuple[int, bool, str | None], dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue  # frozen stages
            inside = root == '' or name.startswith(root + '.')
            local = name[len(root) + 1:] if root and inside else name
            depth = depth_of(local)[0] if inside else num_layers - 1
            no_wd = self._no_decay(rule, name, local if inside else None, param, no_wd_names)
            custom = next((k for k in custom_order if k in name), None)
            key = (depth, no_wd, custom)
            if key not in groups:
                mults = custom_keys.get(custom, {})
                scale = decay ** (num_layers - 1 - depth) * float(mults.get('lr_mult', 1.0))
                wd = 0.0 if no_wd else base_wd * float(mults.get('decay_mult', 1.0))
                groups[key] = dict(params=[], lr=base_lr * scale, lr_scale=scale, layer_depth=depth,
                                   weight_decay=wd, param_names=[])
            groups[key]['params'].append(param)
            groups[key]['param_names'].append(name)
        # Deepest first: mmengine logs the first group's lr, which is then the undecayed (neck / head) lr.
        params.extend(groups[k] for k in sorted(groups, key=lambda k: (-k[0], k[1], k[2] or '')))
        no_wd_list = [n for g in groups.values() if g['weight_decay'] == 0 for n in g['param_names']]
        print_log(f'layer-wise lr decay {decay} over {num_layers} depths of {root or type(module).__name__} '
                  f'(base lr {base_lr:g}, wd {base_wd:g}): {len(groups)} parameter groups, lr scale '
                  f'{min(g["lr_scale"] for g in groups.values()):.4g} .. 1; decay rule {rule!r}: no weight decay on '
                  f'{len(no_wd_list)} tensors, e.g. {", ".join(no_wd_list[:4])}', logger='current')

    @staticmethod
    def _no_decay(rule: str, name: str, local: str | None, param: nn.Parameter, no_wd_names: set[str]) -> bool:
        """Whether ``name`` (full name; ``local``: the name inside the depth module, None outside) gets no weight
        decay under ``rule`` (see the module docstring)."""
        if rule == 'mmdet_vitdet':
            return (local is not None and local.startswith('blocks.') and 'norm' in local) or 'pos_embed' in name
        if param.ndim <= 1 or name.endswith('.bias'):
            return True
        return rule == 'timm' and local is not None and local in no_wd_names
