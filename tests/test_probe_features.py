"""Frozen probe features (probes/features.py): ``encode`` against a ViT forward written out by hand, and the on-disk
feature cache, recomputed when the checkpoint's content, the data files or the settings change -- and only then."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sdae_suite.probes.features as features_mod
import sdae_suite.probes.suite as suite_mod
from sdae_suite.backbones.vit import VisionTransformer
from sdae_suite.probes.features import encode
from sdae_suite.probes.suite import ProbeData, ProbeSettings, probe_checkpoint

TINY_ARCH = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
# The pretraining configs' ImgDataPreprocessor: ImageNet mean / std in 0-255 units (typed here, not imported).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


# ---------------------------------------------------------------- encode() against a hand-written forward

def _tiny_vit(drop_path_rate: float = 0.0) -> VisionTransformer:
    """A tiny ViT whose every parameter is perturbed: LayerNorm affines are not (1, 0), biases are not 0, so a
    reference that skipped a norm, a bias or the cls token would not match."""
    torch.manual_seed(0)
    vit = VisionTransformer(**TINY_ARCH, drop_path_rate=drop_path_rate)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return vit


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased, as LayerNorm
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _linear(x: torch.Tensor, layer) -> torch.Tensor:
    return x @ layer.weight.double().T + layer.bias.double()


def _block(x: torch.Tensor, blk, num_heads: int) -> torch.Tensor:
    """timm's pre-norm block, written out: x + attn(norm1(x)); x + mlp(norm2(x)), softmax attention, exact GELU."""
    b, n, d = x.shape
    hd = d // num_heads
    h = _layer_norm(x, blk.norm1.weight.double(), blk.norm1.bias.double())
    qkv = _linear(h, blk.attn.qkv).reshape(b, n, 3, num_heads, hd)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # [B, heads, N, hd]
    attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1)
    x = x + _linear((attn @ v).transpose(1, 2).reshape(b, n, d), blk.attn.proj)
    h = _layer_norm(x, blk.norm2.weight.double(), blk.norm2.bias.double())
    h = _linear(h, blk.mlp.fc1)
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    return x + _linear(h, blk.mlp.fc2)


def _reference_tokens(vit: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, S, S] -> the final-normed patch tokens [N, L, D] (cls dropped), in float64, by hand:
    normalisation, patch embedding as a matmul over (C, p, p) patches, sin-cos positions, cls token, blocks, norm."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    x = (images.double() - mean) / std
    n, c, s, _ = x.shape
    p = TINY_ARCH['patch_size']
    g = s // p
    patches = torch.stack([x[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(n, -1)
                           for i in range(g) for j in range(g)], dim=1)  # [N, L, C*p*p], row-major patches
    w = vit.patch_embed.proj.weight.double().reshape(vit.embed_dim, -1)
    tokens = patches @ w.T + vit.patch_embed.proj.bias.double()
    pos = vit.pos_embed.double()
    tokens = tokens + pos[:, 1:]
    cls = (vit.cls_token.double() + pos[:, :1]).expand(n, -1, -1)
    h = torch.cat([cls, tokens], dim=1)
    for blk in vit.blocks:
        h = _block(h, blk, TINY_ARCH['num_heads'])
    h = _layer_norm(h, vit.norm.weight.double(), vit.norm.bias.double())
    return h[:, 1:]


def test_encode_is_the_mean_of_final_normed_patch_tokens_by_hand():
    vit = _tiny_vit(drop_path_rate=0.5).train()  # encode must switch to eval (no drop path) and switch back
    images = torch.randint(0, 256, (5, 3, 32, 32), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    with torch.no_grad():
        ref_tokens = _reference_tokens(vit, images)
    got = encode(vit, images, batch_size=2)  # 2 + 2 + 1: the batches are put back together in order
    assert got.shape == (5, TINY_ARCH['embed_dim']) and vit.training
    torch.testing.assert_close(got.double(), ref_tokens.mean(1), atol=2e-5, rtol=1e-4)
    # The reference is not something any pooling would match: with the cls token in the mean it is off.
    with_cls_error = (got.double() - torch.cat([ref_tokens, _cls_out(vit, images)], 1).mean(1)).abs().max()
    assert with_cls_error > 1e-2

    maps = encode(vit, images, batch_size=3, patch_tokens=True)
    assert maps.shape == (5, TINY_ARCH['embed_dim'], 4, 4)
    for r in range(4):
        for c in range(4):  # token r * w + c is the map's pixel (r, c)
            torch.testing.assert_close(maps[:, :, r, c].double(), ref_tokens[:, r * 4 + c], atol=2e-5, rtol=1e-4)


def _cls_out(vit: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """The final-normed cls token [N, 1, D] of the same forward (only to show the test tells the poolings apart)."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return vit.eval()((images.float() - mean) / std)[:, :1].double()


# ---------------------------------------------------------------- the feature cache

@pytest.fixture()
def cls_data(tmp_path) -> Path:
    """Three class folders of tinted noise, 5 images each (4 train, 1 held out per class)."""
    root = tmp_path / 'cls'
    rng = np.random.default_rng(0)
    for c, name in enumerate(('blue', 'green', 'red')):
        (root / name).mkdir(parents=True)
        for i in range(5):
            img = rng.integers(0, 80, (32, 32, 3))
            img[..., 2 - c] += 150
            Image.fromarray(img.astype(np.uint8)).save(root / name / f'{i}.png')
    return root


def _save_backbone(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    torch.save({'meta': {'format': 'sdae-suite/backbone', 'version': 1, 'method': 'sdae', 'epoch': 1,
                         'branch': 'student', 'arch': TINY_ARCH},
                'state_dict': VisionTransformer(**TINY_ARCH).state_dict()}, path)


def _bump_mtime(path: Path) -> None:
    """Give a rewritten file an mtime no earlier write had: the checkpoint digest is memoised per (path, size, mtime)
    in a process and the data signature is (path, size, mtime), so two writes of same-sized files within one
    filesystem timestamp tick would otherwise look identical to both."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))


def test_feature_cache_is_recomputed_exactly_when_checkpoint_data_or_settings_change(cls_data, tmp_path, monkeypatch):
    calls = []
    real_encode = suite_mod.encode

    def counting_encode(model, images, *args, **kwargs):
        calls.append(len(images))
        return real_encode(model, images, *args, **kwargs)

    monkeypatch.setattr(suite_mod, 'encode', counting_encode)
    cache = tmp_path / 'cache'
    ckpt = tmp_path / 'a.pth'
    _save_backbone(ckpt, seed=0)
    settings = ProbeSettings(max_train_per_class=None, max_test_per_class=None)

    def run(checkpoint=ckpt, s=settings, seeds=(0,)):
        """-> (number of feature passes, features_cached of each result); one pass = train + test = 2 encodes."""
        before = len(calls)
        files = probe_checkpoint(None if checkpoint is None else str(checkpoint), ProbeData(str(cls_data), None,
                                 None, s), tmp_path / 'out', probes=('knn',), seeds=seeds, arch=TINY_ARCH,
                                 cache_dir=cache, log=lambda *_: None)
        new = calls[before:]
        assert len(new) % 2 == 0
        return len(new) // 2, [json.loads(f.read_text())['time_s']['features_cached'] for f in files]

    assert run() == (1, [False])
    assert len(list(cache.glob('*.pt'))) == 1
    assert run() == (0, [True])  # nothing changed
    assert run(seeds=(0, 1, 2)) == (0, [True] * 3)  # a checkpoint's features do not depend on the probe seed

    # The checkpoint: only its content counts -- not its mtime, not its path.
    os.utime(ckpt, ns=(0, os.stat(ckpt).st_mtime_ns + 5_000_000_000))  # touched, same bytes
    assert run() == (0, [True])
    copy = tmp_path / 'copy_of_a.pth'
    copy.write_bytes(ckpt.read_bytes())
    assert run(copy) == (0, [True])
    _save_backbone(ckpt, seed=1)  # rewritten in place with other weights
    _bump_mtime(ckpt)
    assert run() == (1, [False])
    assert run() == (0, [True])
    assert len(list(cache.glob('*.pt'))) == 2

    # The data files: a changed image, an added image -> recomputed; a file that is not an image -> not.
    img = cls_data / 'red' / '2.png'
    arr = np.asarray(Image.open(img)).copy()
    arr[0, 0] = 255 - arr[0, 0]
    Image.fromarray(arr).save(img)
    _bump_mtime(img)
    assert run() == (1, [False])
    (cls_data / 'red' / 'notes.txt').write_text('not an image')
    assert run() == (0, [True])
    Image.fromarray(arr).save(cls_data / 'red' / '5.png')
    assert run() == (1, [False])
    assert run() == (0, [True])

    # The settings that decide which images are encoded and how: recomputed. Those only the probe heads read: not.
    head_only = dict(knn_k=5, knn_temperature=0.5, linear_epochs=3, seg_epochs=2)
    assert run(s=ProbeSettings(max_train_per_class=None, max_test_per_class=None, **head_only)) == (0, [True])
    assert run(s=ProbeSettings(max_train_per_class=None, max_test_per_class=None, batch_size=2)) == (1, [False])
    assert run(s=ProbeSettings(img_size=16, max_train_per_class=None, max_test_per_class=None)) == (1, [False])
    assert run(s=ProbeSettings(max_train_per_class=3, max_test_per_class=None)) == (1, [False])
    assert run(s=ProbeSettings(max_train_per_class=3, max_test_per_class=None)) == (0, [True])
    # The way features are computed: bumping FEATURE_VERSION invalidates every cache file.
    monkeypatch.setattr(features_mod, 'FEATURE_VERSION', features_mod.FEATURE_VERSION + 1)
    assert run() == (1, [False])
    assert run() == (0, [True])

    # Random init: one encoder per seed, each cached under its own key.
    assert run(None, seeds=(0, 1)) == (2, [False, False])
    assert run(None, seeds=(1, 0)) == (0, [True, True])


def test_cached_features_are_the_computed_ones_and_a_corrupt_cache_file_is_recomputed(cls_data, tmp_path):
    cache = tmp_path / 'cache'
    ckpt = tmp_path / 'a.pth'
    _save_backbone(ckpt, seed=0)
    data = ProbeData(str(cls_data), None, None, ProbeSettings(max_train_per_class=None, max_test_per_class=None))
    model, _ = features_mod.build_encoder(str(ckpt))
    xtr = data.cls_images(32)[0]
    key = features_mod.cache_key(str(ckpt), 'student', 0, data.signature('cls'), {'size': 32})
    n = []
    compute = lambda: (n.append(1), {'train': encode(model, xtr)})[1]  # noqa: E731
    first, hit1 = features_mod.cached(cache, key, compute)
    second, hit2 = features_mod.cached(cache, key, compute)
    assert (hit1, hit2, len(n)) == (False, True, 1)
    assert torch.equal(first['train'], second['train'])
    (cache / f'{key}.pt').write_bytes((cache / f'{key}.pt').read_bytes()[:100])  # a truncated cache file
    third, hit3 = features_mod.cached(cache, key, compute)
    assert (hit3, len(n)) == (False, 2) and torch.equal(third['train'], first['train'])
