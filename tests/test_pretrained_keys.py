"""A checkpoint holding both ``model`` and ``state_dict`` is an error that names both, unless the caller picks one
(``key=`` / ``init_cfg.key``); the pick loads exactly that entry and reports the other as set aside."""
from __future__ import annotations

import pytest
import torch

from sdae_suite.backbones.pretrained import CheckpointMismatchError, load_pretrained
from sdae_suite.backbones.vit_backbone import SdAEViT
from sdae_suite.engine.atomic import atomic_torch_save

ARCH = dict(img_size=32, patch_size=16, embed_dim=16, depth=2, num_heads=2, out_indices=[1], drop_path_rate=0.0)


def _weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in SdAEViT(**ARCH).state_dict().items()}


@pytest.fixture()
def both(tmp_path):
    model_sd, other_sd = _weights(1), _weights(2)
    path = tmp_path / 'both.pth'
    atomic_torch_save({'model': model_sd, 'state_dict': {f'backbone.{k}': v for k, v in other_sd.items()},
                       'epoch': 3}, path)
    return path, model_sd, other_sd


def test_both_model_and_state_dict_is_an_error_naming_both(both):
    path, _, _ = both
    with pytest.raises(CheckpointMismatchError, match=r"both 'model' \(\d+ entries\) and 'state_dict' .*key="):
        load_pretrained(SdAEViT(**ARCH), path)


@pytest.mark.parametrize('key', ['model', 'state_dict'])
def test_the_chosen_entry_is_loaded(both, key):
    path, model_sd, other_sd = both
    m = SdAEViT(**ARCH)
    report = load_pretrained(m, path, key=key)
    want = model_sd if key == 'model' else other_sd
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=0)
    set_aside = report.dropped[f'not chosen (key={key!r})']
    assert set_aside == (['state_dict'] if key == 'model' else ['model'])


def test_init_cfg_key_reaches_the_loader_and_bad_keys_fail(both):
    path, model_sd, _ = both
    m = SdAEViT(**ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path), key='model'))
    m.init_weights()
    torch.testing.assert_close(m.blocks[0].attn.qkv.weight, model_sd['blocks.0.attn.qkv.weight'], rtol=0, atol=0)
    with pytest.raises(ValueError, match="key must be 'model', 'state_dict' or None"):
        load_pretrained(SdAEViT(**ARCH), path, key='ema')
    only_model = path.with_name('only_model.pth')
    atomic_torch_save({'model': model_sd}, only_model)
    with pytest.raises(CheckpointMismatchError, match="key='state_dict' was asked for"):
        load_pretrained(SdAEViT(**ARCH), only_model, key='state_dict')
    load_pretrained(SdAEViT(**ARCH), only_model)  # a single entry needs no key
