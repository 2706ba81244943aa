"""pretrain/diagnose.py and tools/diagnose_targets.py on cases with a known answer: the ridge fit against an
independent least-squares formulation, R^2 by hand, the neighbour-colour features by a loop, and whole diagnoses of
constructed image sets whose targets are (or are not) a linear function of the baselines' inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sdae_suite.backbones  # noqa: F401
from sdae_suite.commands.diagnose_targets import main as diagnose_main
from sdae_suite.pretrain.diagnose import neighbour_colour_features, r2, ridge_fit
from sdae_suite.pretrain.model import MaskedPretrainer

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])
ENCODER = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
DECODER = dict(embed_dim=16, depth=1, num_heads=2)


# ---------------------------------------------------------------- the pieces

def test_ridge_fit_equals_augmented_least_squares():
    """min |y - xW - b|^2 + lam N |W|^2 is ordinary least squares on x stacked over sqrt(lam N) I (and y over 0),
    with the intercept column 0 in the penalty rows: solved here by numpy's lstsq, not by normal equations."""
    rng = np.random.default_rng(0)
    n, f, d = 200, 6, 3
    x = rng.normal(size=(n, f)) * rng.uniform(0.5, 3, size=f) + rng.normal(size=f)
    a, b = rng.normal(size=(f, d)), rng.normal(size=d)
    y = x @ a + b + 0.1 * rng.normal(size=(n, d))
    for lam in (0.0, 1e-3, 0.5):
        penalty_rows = np.hstack([np.sqrt(lam * n) * np.eye(f), np.zeros((f, 1))])
        aug_x = np.vstack([np.hstack([x, np.ones((n, 1))]), penalty_rows])
        aug_y = np.vstack([y, np.zeros((f, d))])
        sol = np.linalg.lstsq(aug_x, aug_y, rcond=None)[0]
        w, bias = ridge_fit(torch.from_numpy(x), torch.from_numpy(y), lam=lam)
        np.testing.assert_allclose(w.numpy(), sol[:f], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(bias.numpy(), sol[f], rtol=1e-8, atol=1e-10)
    # Exactly linear targets, no penalty: the coefficients come back.
    w, bias = ridge_fit(torch.from_numpy(x), torch.from_numpy(x @ a + b), lam=0.0)
    np.testing.assert_allclose(w.numpy(), a, atol=1e-9)
    np.testing.assert_allclose(bias.numpy(), b, atol=1e-9)


def test_r2_by_hand():
    y = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [6.0, 0.0]])
    assert r2(y, y) == 1.0
    assert r2(y.mean(0).expand_as(y), y) == pytest.approx(0.0, abs=1e-12)  # the scored set's own mean explains 0
    pred = y + torch.tensor([[1.0, -2.0], [0.0, 2.0], [-1.0, 0.0], [0.0, 0.0]])
    sst = ((y[:, 0] - 3.0) ** 2).sum() + ((y[:, 1] - 15.0) ** 2).sum()  # pooled over both channels: 14 + 500
    assert sst.item() == 514.0
    assert r2(pred, y) == pytest.approx(1 - 10 / 514)  # SSE = 1 + 4 + 0 + 4 + 1 + 0 = 10
    assert r2(-y, y) == 0.0  # worse than the mean: clipped


def test_neighbour_colour_features_by_a_loop():
    b, h, w, p = 2, 4, 5, 2  # a non-square grid: rows and columns must not be swapped
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(b, 3, h * p, w * p, generator=g)
    perm = torch.stack([torch.randperm(h * w, generator=g) for _ in range(b)])
    ids_keep, ids_masked = perm[:, :6], perm[:, 6:]
    got = neighbour_colour_features(imgs, ids_masked, ids_keep, (h, w), p)
    assert got.shape == (b, h * w - 6, 10)

    def pixels(i, idx):  # [3, p*p] pixels of patch idx of image i
        r, c = divmod(int(idx), w)
        return imgs[i, :, r * p:(r + 1) * p, c * p:(c + 1) * p].reshape(3, -1)

    for i in range(b):
        visible = set(ids_keep[i].tolist())
        img_mean = torch.cat([pixels(i, v) for v in visible], 1).mean(1)
        for j, m in enumerate(ids_masked[i].tolist()):
            r, c = divmod(m, w)
            nb = [(r + dr) * w + (c + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                  if (dr or dc) and 0 <= r + dr < h and 0 <= c + dc < w and (r + dr) * w + (c + dc) in visible]
            if nb:
                px = torch.cat([pixels(i, v) for v in nb], 1)
                mean, std = px.mean(1), px.std(1, unbiased=False)
            else:
                mean = std = torch.zeros(3)
            expected = torch.cat([mean, std, torch.tensor([len(nb) / 8]), img_mean])
            torch.testing.assert_close(got[i, j], expected, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- whole diagnoses with known answers

def _checkpoint(path: Path, norm_pix_loss: bool) -> Path:
    """A raw pretraining checkpoint as tools/pretrain.sh writes it: meta.cfg (the config text) + state_dict."""
    cfg = (f'model = dict(type="MaskedPretrainer", encoder={ENCODER!r}, decoder={DECODER!r}, objective="mae", '
           f'norm_pix_loss={norm_pix_loss})\n')
    torch.manual_seed(0)
    model = MaskedPretrainer(encoder=ENCODER, decoder=DECODER, objective='mae', norm_pix_loss=norm_pix_loss)
    torch.save({'meta': {'cfg': cfg}, 'state_dict': model.state_dict()}, path)
    return path


def _write_images(folder: Path, images: list[np.ndarray]) -> None:
    folder.mkdir(parents=True)
    for i, im in enumerate(images):  # PNG: the pixels the diagnosis reads are exactly these
        Image.fromarray(im).save(folder / f'img_{i:03d}.png')


def _diagnose(tmp_path: Path, name: str, images: list[np.ndarray], norm_pix_loss: bool) -> dict:
    _write_images(tmp_path / name, images)
    out = tmp_path / f'{name}.json'
    ckpt = _checkpoint(tmp_path / f'{name}.pth', norm_pix_loss)
    assert diagnose_main([str(ckpt), str(tmp_path / name), '--out', str(out), '--seed', '3']) == 0
    res = json.loads(out.read_text())
    assert (res['images_fit'], res['images_scored'], res['masked_per_image']) == (20, 20, 12)
    return res


N_IMAGES = 40


def test_targets_linear_in_the_colour_inputs_and_independent_of_position(tmp_path, capsys):
    """Solid-colour images, raw-pixel targets: every masked patch's target is its image's colour, normalised --
    an exact linear function of the visible patches' mean colour (a baseline input), and independent of position.
    Known answer: R^2 ~ 1 for position+colours (only the ridge penalty, lam = 1e-3, keeps it below 1: measured
    0.99913), ~ 0 for position (measured 0: worse than the scored set's mean, clipped)."""
    rng = np.random.default_rng(1)
    colours = rng.integers(0, 256, size=(N_IMAGES, 3))
    images = [np.broadcast_to(c.astype(np.uint8), (32, 32, 3)).copy() for c in colours]
    res = _diagnose(tmp_path, 'solid', images, norm_pix_loss=False)
    pos, col = res['baselines']['position'], res['baselines']['position+colours']
    assert col['r2'] > 0.995
    assert pos['r2'] < 0.02
    # MSE in the targets' units: the scored images' colour variance (normalised), pooled over the three channels,
    # is what the position baseline cannot explain; position+colours leaves almost none of it.
    scored = (colours[N_IMAGES // 2:] - MEAN) / STD
    var = scored.var(0).mean()
    assert pos['loss'] >= 0.95 * var
    assert col['loss'] < 5e-3 * var
    printed = capsys.readouterr().out
    assert 'position+colours' in printed and f'{col["r2"]:.3f}' in printed


def test_targets_a_function_of_position_only(tmp_path):
    """The same textured image 40 times, norm-pix targets: a masked patch's target depends only on which patch it
    is. Known answer: R^2 ~ 1 for position (and for position+colours, which contains it); measured 0.99972."""
    pattern = np.random.default_rng(2).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    res = _diagnose(tmp_path, 'same', [pattern] * N_IMAGES, norm_pix_loss=True)
    assert res['baselines']['position']['r2'] > 0.99
    assert res['baselines']['position+colours']['r2'] > 0.99
    assert res['baselines']['position']['loss'] < 0.02  # vs ~ 1 for unit-variance norm-pix targets


def test_targets_independent_of_every_input(tmp_path):
    """Independent uniform noise pixels, norm-pix targets: a masked patch's normalised pixels are independent of its
    position and of every other patch's colours. Known answer: R^2 ~ 0 for both baselines, MSE ~ the targets'
    mean square, (n - 1) / n = 191/192 per norm-pix patch. Measured: R^2 0 (clipped) for both, MSE 1.05 / 1.06."""
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) for _ in range(N_IMAGES)]
    res = _diagnose(tmp_path, 'noise', images, norm_pix_loss=True)
    for name in ('position', 'position+colours'):
        assert res['baselines'][name]['r2'] < 0.02, name
        assert res['baselines'][name]['loss'] > 0.9 * 191 / 192, name
