"""Frozen-feature probes (probes/): k-NN votes by hand, linear probe on separable features, the segmentation probe
scored by mmseg's IoUMetric, the per-checkpoint suite (JSON, cache, determinism), and the target monitors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mmseg.evaluation import IoUMetric
from PIL import Image

from sdae_suite.backbones.vit import VisionTransformer
from sdae_suite.pretrain.monitors import effective_rank, mean_cosine_to_mean
from sdae_suite.probes.data import ProbeDataError, class_split, read_label
from sdae_suite.probes.features import ProbeCheckpointError
from sdae_suite.probes.knn import knn_predict, knn_top1, knn_votes
from sdae_suite.probes.linear import linear_probe
from sdae_suite.probes.seg import linear_seg_probe, seg_metrics
from sdae_suite.probes.suite import ProbeData, ProbeSettings, probe_checkpoint

TINY_ARCH = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


# ---------------------------------------------------------------- k-NN

def _knn_fixture():
    # Test point (1, 0). Neighbours by cosine: a (1.0, class 0), b and c (0.6 each, class 1), d (-1.0, class 0).
    # Lengths differ on purpose: only the direction counts.
    train = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8], [-1.0, 0.0]]) * torch.tensor([[2.0], [1], [3], [1]])
    labels = torch.tensor([0, 1, 1, 0])
    return train, labels, torch.tensor([[5.0, 0.0]])


def test_knn_votes_equal_hand_computed_dino_weights():
    train, labels, test = _knn_fixture()
    # k = 3 keeps a, b, c; d (cosine -1) is out. Votes: class 0 exp(1 / T), class 1 2 exp(0.6 / T).
    votes = knn_votes(train, labels, test, num_classes=2, k=3, temperature=0.07)
    assert votes[0, 0].item() == pytest.approx(math.exp(1 / 0.07), rel=1e-5)
    assert votes[0, 1].item() == pytest.approx(2 * math.exp(0.6 / 0.07), rel=1e-5)
    assert knn_predict(train, labels, test, 2, k=3, temperature=0.07).tolist() == [0]  # the close neighbour wins
    # At T = 1 the weights flatten: 2 e^0.6 = 3.64 > e^1 = 2.72, the two class-1 neighbours win.
    assert knn_predict(train, labels, test, 2, k=3, temperature=1.0).tolist() == [1]
    # k = 4 adds d's vote exp(-1 / T) to class 0; k larger than the bank is clipped to it.
    votes4 = knn_votes(train, labels, test, 2, k=20, temperature=1.0)
    assert votes4[0, 0].item() == pytest.approx(math.exp(1) + math.exp(-1), rel=1e-6)
    assert knn_top1(train, labels, test, torch.tensor([1]), 2, k=3, temperature=1.0) == 100.0


# ---------------------------------------------------------------- linear classifier

def test_linear_probe_reaches_100_percent_on_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(3, 16) * 10

    def sample(n):
        y = torch.arange(3).repeat(n)
        return centres[y] + torch.randn(len(y), 16, generator=g), y
    xtr, ytr = sample(30)
    xte, yte = sample(10)
    res = linear_probe(xtr, ytr, xte, yte, num_classes=3, seed=0, epochs=30)
    assert res['top1'] == 100.0 and res['train_top1'] == 100.0
    assert linear_probe(xtr, ytr, xte, yte, 3, seed=0, epochs=30) == res  # deterministic for a seed


# ---------------------------------------------------------------- segmentation

def test_seg_metrics_equal_hand_count_and_mmseg():
    gt = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 2]])
    res = seg_metrics([pred], [gt], num_classes=3)
    # By hand (the 255 pixel is ignored): IoU class 0 = 1/2, class 1 = 2/3, class 2 = 1/1; 4 of 5 pixels right.
    assert res['mIoU'] == pytest.approx(round(100 * (1 / 2 + 2 / 3 + 1) / 3, 2))
    assert res['aAcc'] == pytest.approx(80.0)
    assert res['mAcc'] == pytest.approx(round(100 * (1 / 2 + 1 + 1) / 3, 2))


def _seg_fixture(n: int, seed: int):
    """Patch features [n, 4, 4, 4] whose channel argmax is the class; labels 4x upsampled, with ignored border."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, 3, (n, 4, 4), generator=g)
    feats = torch.nn.functional.one_hot(cls, 4).permute(0, 3, 1, 2).float() * 3 + 0.1 * torch.randn(
        n, 4, 4, 4, generator=g)
    labels = cls.repeat_interleave(4, 1).repeat_interleave(4, 2)
    labels[:, 0, :] = 255
    return feats, labels


def test_linear_seg_probe_miou_equals_mmseg_iou_metric():
    ftr, ltr = _seg_fixture(12, 0)
    fva, lva = _seg_fixture(4, 1)
    res = linear_seg_probe(ftr, ltr, fva, list(lva), num_classes=3, seed=0, epochs=30, batch_size=4)
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=['a', 'b', 'c'])
    metric.process({}, [dict(pred_sem_seg=dict(data=p[None]), gt_sem_seg=dict(data=g[None]))
                        for p, g in zip(res['preds'], lva)])
    ref = metric.compute_metrics(metric.results)
    assert res['mIoU'] == pytest.approx(ref['mIoU']) and res['aAcc'] == pytest.approx(ref['aAcc'])
    assert [p.shape for p in res['preds']] == [lab.shape for lab in lva]  # upsampled to the label map
    assert res['mIoU'] > 60  # it learned the separable classes (bilinear upsampling blurs the 4x4 cell borders)
    again = linear_seg_probe(ftr, ltr, fva, list(lva), num_classes=3, seed=0, epochs=30, batch_size=4)
    assert again['mIoU'] == res['mIoU']


def test_reduce_zero_label_follows_mmseg(tmp_path):
    Image.fromarray(np.array([[0, 1, 2], [255, 3, 0]], dtype=np.uint8)).save(tmp_path / 'a.png')
    assert read_label(str(tmp_path / 'a.png')).tolist() == [[255, 0, 1], [255, 2, 255]]


# ---------------------------------------------------------------- the suite on a tiny data set

@pytest.fixture(scope='module')
def probe_data(tmp_path_factory) -> tuple[Path, Path]:
    """Class folders (red / blue / green tinted noise, 10 images each) and an ADE-format set (6 + 3 images)."""
    root = tmp_path_factory.mktemp('probe_data')
    rng = np.random.default_rng(0)
    for c, name in enumerate(('blue', 'green', 'red')):
        (root / 'cls' / name).mkdir(parents=True)
        for i in range(10):
            img = rng.integers(0, 80, (36, 40, 3))
            img[..., 2 - c] += 150
            Image.fromarray(img.astype(np.uint8)).save(root / 'cls' / name / f'{i}.png')
    for split, n in (('training', 6), ('validation', 3)):
        (root / 'ade' / 'images' / split).mkdir(parents=True)
        (root / 'ade' / 'annotations' / split).mkdir(parents=True)
        for i in range(n):
            lab = np.ones((40, 48), np.uint8)  # 1 = background
            lab[8 + i:24 + i, 10:30] = 2  # a bright square
            lab[0, :] = 0  # 'other', ignored
            img = rng.integers(0, 40, (40, 48, 3)).astype(np.uint8)
            img[lab == 2] = 220
            Image.fromarray(img).save(root / 'ade' / 'images' / split / f'{i}.jpg')
            Image.fromarray(lab).save(root / 'ade' / 'annotations' / split / f'{i}.png')
    return root / 'cls', root / 'ade'


def test_class_split_is_deterministic_and_disjoint(probe_data):
    a, b = class_split(probe_data[0]), class_split(probe_data[0])
    assert a == b and a.classes == ['blue', 'green', 'red']
    assert len(a.train) == 24 and len(a.test) == 6  # every 5th image of each class held out
    assert not {p for p, _ in a.train} & {p for p, _ in a.test}
    with pytest.raises(ProbeDataError, match='class folder'):
        class_split(probe_data[0] / 'red')


def test_probe_checkpoint_writes_json_caches_features_and_is_deterministic(probe_data, tmp_path):
    settings = ProbeSettings(linear_epochs=20, seg_epochs=5)
    data = ProbeData(str(probe_data[0]), None, str(probe_data[1]), settings)
    ckpt = tmp_path / 'timm.pth'
    torch.save(VisionTransformer(**TINY_ARCH).state_dict(), ckpt)  # a plain timm state dict: no meta arch
    with pytest.raises(ProbeCheckpointError, match='--arch'):
        probe_checkpoint(str(ckpt), data, tmp_path / 'out', seeds=(0,))
    cache = tmp_path / 'cache'
    files = probe_checkpoint(str(ckpt), data, tmp_path / 'out', seeds=(0, 1), arch=TINY_ARCH, cache_dir=cache)
    expected = sorted(f'{p}_seed{s}.json' for p in ('knn', 'linear', 'seg') for s in (0, 1))
    assert sorted(f.name for f in files) == expected
    res = {f.name: json.loads(f.read_text()) for f in files}
    assert res['knn_seed0.json']['format'] == 'sdae-suite/probe-result'
    assert 0 <= res['knn_seed0.json']['metrics']['top1'] <= 100 and 'mIoU' in res['seg_seed1.json']['metrics']
    assert res['knn_seed0.json']['metrics'] == res['knn_seed1.json']['metrics']  # k-NN has no seed
    assert len(list(cache.glob('*.pt'))) == 2  # one feature file per kind (cls, seg), shared by the seeds
    again = probe_checkpoint(str(ckpt), data, tmp_path / 'out2', seeds=(0,), arch=TINY_ARCH, cache_dir=cache)
    res2 = {f.name: json.loads(f.read_text()) for f in again}
    for name in res2:
        assert res2[name]['metrics'] == res[name]['metrics']
        assert res2[name]['time_s']['features_cached'] is True
    # Random init: one encoder per seed, so the features (and the k-NN result) may differ between seeds.
    rnd = probe_checkpoint(None, data, tmp_path / 'out', probes=('knn',), seeds=(0, 1), arch=TINY_ARCH,
                           cache_dir=cache)
    assert [f.parent.name for f in rnd] == ['random_init', 'random_init']
    assert len(list(cache.glob('*.pt'))) == 4


def test_pipeline_probe_stage_writes_its_outputs_and_random_init_takes_the_backbones_arch(probe_data, tmp_path,
                                                                                          monkeypatch):
    """The probe stage of tools/run_benchmark.py, its command run as is (tiny budget): it writes exactly the files it
    declares as outputs, and random init is built with the architecture the exported backbones record."""
    import argparse

    from sdae_suite.commands import run_benchmark as rb
    from sdae_suite.commands.probe import main as probe_main

    arch = dict(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=2)
    data = tmp_path / 'data'  # the demo layout: DIR/pretrain/train (class folders) and DIR/ade
    (data / 'pretrain').mkdir(parents=True)
    (data / 'pretrain' / 'train').symlink_to(probe_data[0])
    (data / 'ade').symlink_to(probe_data[1])
    work = tmp_path / 'work'
    backbones = {}
    for seed, method in enumerate(('sdae', 'mae')):
        backbones[method] = work / f'pretrain_{method}' / 'backbone_student.pth'
        backbones[method].parent.mkdir(parents=True)
        torch.manual_seed(seed)
        torch.save({'meta': {'format': 'sdae-suite/backbone', 'version': 1, 'method': method, 'epoch': 2,
                             'branch': 'student', 'arch': arch}, 'state_dict': VisionTransformer(**arch).state_dict()},
                   backbones[method])
    monkeypatch.setenv('SDAE_DEMO_BUDGET', 'tiny')
    args = argparse.Namespace(gpus=1, data_root=data, imagenet=None, coco=None, ade=None)
    stage = rb.probe_stage(args, rb.PRESETS['demo'], work, backbones, 'tiny', [], needs=())
    assert stage.cmd[:2] == [rb.PY, 'tools/probe.py']
    assert probe_main(stage.cmd[2:]) == 0
    written = sorted(str(p) for p in (work / 'probes').rglob('*_seed*.json'))
    assert written == sorted(stage.outputs)
    res = json.loads((work / 'probes' / 'random_init' / 'linear_seed2.json').read_text())
    assert res['name'] == 'random init' and res['checkpoint'] is None and res['arch'] == arch
    assert res['data']['train'] == 3 * 8 and res['data']['test'] == 3 * 2  # capped: 8 per class, 2 held out of 10
    sdae = json.loads((work / 'probes' / 'sdae' / 'seg_seed0.json').read_text())
    assert sdae['checkpoint'] == str(backbones['sdae']) and sdae['checkpoint_meta']['method'] == 'sdae'


# ---------------------------------------------------------------- target monitors

def test_effective_rank_known_values():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(50, 1, generator=g), torch.randn(1, 12, generator=g)
    assert effective_rank(u @ v).item() == pytest.approx(1.0, abs=1e-3)  # rank 1
    assert effective_rank(torch.eye(16)).item() == pytest.approx(16.0, rel=1e-5)  # identity: D
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=g))
    assert effective_rank(3 * q[:, :8].T).item() == pytest.approx(8.0, rel=1e-4)  # 8 orthogonal equal directions
    # Two directions with singular values 3 : 1 -> exp(H(0.75, 0.25)).
    x = torch.zeros(2, 5)
    x[0, 0], x[1, 1] = 3, 1
    assert effective_rank(x).item() == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    # Above max_rows every 5th row is used (4800 rows, stride 5, coprime to the period 8): the value is kept.
    assert effective_rank(torch.eye(8).repeat(600, 1), max_rows=1000).item() == pytest.approx(8.0, rel=1e-5)


def test_effective_rank_equals_the_float64_svd_whatever_the_input_precision():
    """The Gram-eigenvalue computation gives the singular values of a float64 SVD, also for bf16 targets inside a
    bf16 autocast region (where a plain matmul would run in bf16)."""
    g = torch.Generator().manual_seed(1)
    for x in (torch.randn(2048, 96, generator=g) @ torch.randn(96, 96, generator=g) + 3,  # N > D
              torch.randn(40, 100, generator=g),  # N < D: the [N, N] Gram
              (torch.randn(700, 48, generator=g) @ torch.randn(48, 48, generator=g)).bfloat16()):
        s = torch.linalg.svdvals(x.double())
        p = s / s.sum()
        want = torch.exp(-(p * torch.log(p)).sum()).item()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            got = effective_rank(x).item()
        assert got == pytest.approx(want, rel=1e-6)


def test_mean_cosine_to_mean():
    assert mean_cosine_to_mean(torch.ones(5, 3) * torch.arange(1, 6).view(5, 1)).item() == pytest.approx(1.0)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert mean_cosine_to_mean(x).item() == pytest.approx(math.cos(math.pi / 4))
