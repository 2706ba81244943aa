"""The probes as benchmark tasks: checkpoints x probes x seeds -> one JSON result file each.

  <out>/<checkpoint name>/<probe>_seed<seed>.json
  {"format": "sdae-suite/probe-result", "probe": "knn" | "linear" | "seg", "name", "checkpoint", "checkpoint_meta",
   "seed", "metrics": {...}, "settings": {...}, "data": {...}, "time_s": {...}}

``sdae_suite.report.probes`` reads these files; ``tools/probe.py`` is the command line.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from sdae_suite.backbones.pretrained import read_meta
from sdae_suite.contracts import PROBE_RESULT_FORMAT, PROBES, RANDOM_INIT, ProbeResult, probe_result_path
from sdae_suite.engine.atomic import atomic_write_json

from .data import ClassSplit, SegSet, class_split, load_images, load_seg, seg_files
from .features import build_encoder, cache_key, cached, encode, files_signature
from .knn import knn_top1
from .linear import linear_probe
from .seg import linear_seg_probe

# ProbeSettings fields that only the trained heads read: changing one reuses the cached features. (batch_size stays in
# the key: a different encoding batch can change the features in the last bits.)
HEAD_ONLY = ('knn_k', 'knn_temperature', 'linear_epochs', 'seg_epochs')


@dataclass
class ProbeSettings:
    """What a probe result depends on besides the checkpoint and the data (part of the cache key and the JSON)."""
    img_size: int | None = None  # classification input; None: the encoder's pretraining size
    seg_size: int | None = None  # segmentation input; None: twice the pretraining size
    knn_k: int = 20
    knn_temperature: float = 0.07
    held_out_every: int = 5  # one folder: every 5th image of each class is held out
    # The demo pool has 2,400 images; the first 150 / 50 of each class keep a probe near a minute on 2 cores.
    max_train_per_class: int | None = 150
    max_test_per_class: int | None = 50
    seg_max_train: int | None = None
    seg_max_val: int | None = None
    seg_num_classes: int | None = None  # None: 1 + the largest label found (after reduce_zero_label)
    linear_epochs: int = 100
    seg_epochs: int = 20
    batch_size: int = 64

    def feature_key(self) -> dict:
        """The settings the features depend on (the cache key): not the probe heads' own (k, temperature, epochs)."""
        return {k: v for k, v in asdict(self).items() if k not in HEAD_ONLY}

    def sizes(self, arch: dict) -> tuple[int, int]:
        s = arch.get('img_size', 224)
        s = s if isinstance(s, int) else int(s[0])
        return self.img_size or s, self.seg_size or 2 * s


@dataclass
class ProbeData:
    """The probes' labelled data, read once; images are resized per input size on first use and kept."""
    cls_root: str | None = None
    cls_val_root: str | None = None
    seg_root: str | None = None
    settings: ProbeSettings = field(default_factory=ProbeSettings)
    _split: ClassSplit | None = None
    _cls: dict = field(default_factory=dict)
    _seg: dict = field(default_factory=dict)

    @property
    def split(self) -> ClassSplit:
        if self._split is None:
            s = self.settings
            self._split = class_split(self.cls_root, self.cls_val_root, s.held_out_every, s.max_train_per_class,
                                      s.max_test_per_class)
        return self._split

    def cls_images(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (train images uint8 [N, 3, S, S], train labels [N], test images [M, 3, S, S], test labels [M])."""
        if size not in self._cls:
            sp = self.split
            self._cls[size] = (load_images([p for p, _ in sp.train], size), torch.tensor([c for _, c in sp.train]),
                               load_images([p for p, _ in sp.test], size), torch.tensor([c for _, c in sp.test]))
        return self._cls[size]

    def seg_sets(self, size: int) -> tuple[SegSet, SegSet]:
        if size not in self._seg:
            s = self.settings
            self._seg[size] = (load_seg(self.seg_root, 'training', size, s.seg_max_train),
                               load_seg(self.seg_root, 'validation', size, s.seg_max_val))
        return self._seg[size]

    def seg_num_classes(self, size: int) -> int:
        if self.settings.seg_num_classes:
            return self.settings.seg_num_classes
        train, val = self.seg_sets(size)
        labels = torch.cat([train.labels.flatten()] + [lab.flatten() for lab in val.full_labels])
        return int(labels[labels != 255].max()) + 1

    def signature(self, kind: str) -> str:
        """The data part of a feature cache key: the files a probe reads (path, size, mtime)."""
        if kind == 'cls':
            sp = self.split
            return files_signature([p for p, _ in sp.train + sp.test])
        if self.seg_root is None:
            raise ValueError('no segmentation data given (--seg-data or --data)')
        s = self.settings
        pairs = seg_files(self.seg_root, 'training')[:s.seg_max_train] + \
            seg_files(self.seg_root, 'validation')[:s.seg_max_val]
        return files_signature([f for pair in pairs for f in pair])


def class_features(model, data: ProbeData, size: int) -> dict[str, torch.Tensor]:
    """-> {'train': [N, D], 'train_labels': [N], 'test': [M, D], 'test_labels': [M]} (pooled features)."""
    xtr, ytr, xte, yte = data.cls_images(size)
    bs = data.settings.batch_size
    return {'train': encode(model, xtr, bs), 'train_labels': ytr, 'test': encode(model, xte, bs), 'test_labels': yte}


def seg_features(model, data: ProbeData, size: int) -> dict[str, Any]:
    """-> {'train': [N, D, h, w], 'train_labels': [N, S, S], 'val': [M, D, h, w], 'val_labels': M x [H_i, W_i]}."""
    train, val = data.seg_sets(size)
    bs = data.settings.batch_size
    return {'train': encode(model, train.images, bs, patch_tokens=True), 'train_labels': train.labels,
            'val': encode(model, val.images, bs, patch_tokens=True), 'val_labels': val.full_labels}


def run_knn(feats: dict, num_classes: int, s: ProbeSettings) -> dict[str, float]:
    return {'top1': knn_top1(feats['train'], feats['train_labels'], feats['test'], feats['test_labels'], num_classes,
                             s.knn_k, s.knn_temperature)}


def run_linear(feats: dict, num_classes: int, s: ProbeSettings, seed: int) -> dict[str, float]:
    return linear_probe(feats['train'], feats['train_labels'], feats['test'], feats['test_labels'], num_classes,
                        seed=seed, epochs=s.linear_epochs)


def run_seg(feats: dict, num_classes: int, s: ProbeSettings, seed: int) -> dict[str, float]:
    res = linear_seg_probe(feats['train'], feats['train_labels'], feats['val'], feats['val_labels'], num_classes,
                           seed=seed, epochs=s.seg_epochs)
    res.pop('preds')
    return res


def checkpoint_name(checkpoint: str | None) -> str:
    """The report's row name: 'random init', or method / epoch / branch from an exported backbone, else the stem."""
    if checkpoint is None:
        return RANDOM_INIT
    meta = None
    try:
        meta = read_meta(checkpoint)
    except Exception:  # noqa: BLE001  (the name is cosmetic; loading reports real problems)
        meta = None
    if meta and meta.get('method'):
        parts = [str(meta['method'])] + ([f'{meta["epoch"]}ep'] if meta.get('epoch') is not None else [])
        return ' '.join(parts + ([str(meta['branch'])] if meta.get('branch') else []))
    return Path(checkpoint).stem


def probe_checkpoint(checkpoint: str | None, data: ProbeData, out: str | os.PathLike, probes: tuple[str, ...] = PROBES,
                     seeds: tuple[int, ...] = (0,), name: str | None = None, branch: str | None = 'student',
                     arch: dict | None = None, cache_dir: str | os.PathLike | None = None,
                     log=print) -> list[Path]:
    """Run ``probes`` for every seed on one checkpoint (None: random init, one draw per seed); write the JSON files.

    Pretrained features are computed once (the seed changes only the trained heads); a random init is a different
    encoder per seed, so its features are computed per seed. Both are cached under ``cache_dir``.
    """
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise ValueError(f'unknown probe(s) {unknown}; choose from {PROBES}')
    name = name or checkpoint_name(checkpoint)
    s = data.settings
    written = []
    meta = None
    if checkpoint is not None:
        try:
            meta = read_meta(checkpoint)
        except Exception:  # noqa: BLE001
            meta = None
    memo: dict[str, dict] = {}  # a pretrained encoder's features serve every seed
    for seed in seeds:
        enc_seed = seed if checkpoint is None else 0
        model, used_arch = build_encoder(checkpoint, arch, branch, seed=enc_seed)
        img_size, seg_size = s.sizes(used_arch)
        feats: dict[str, tuple[dict, bool, float]] = {}
        for probe in probes:
            kind = 'seg' if probe == 'seg' else 'cls'
            if kind not in feats:  # one feature pass per kind and encoder, shared by knn and linear
                size = img_size if kind == 'cls' else seg_size
                key = cache_key(checkpoint, branch, enc_seed, data.signature(kind),
                                dict(kind=kind, size=size, arch=used_arch, **s.feature_key()))
                t0 = time.perf_counter()
                fn = class_features if kind == 'cls' else seg_features
                if key in memo:
                    value, hit = memo[key], True
                else:
                    value, hit = cached(cache_dir, key, partial(fn, model, data, size))
                    memo[key] = value
                feats[kind] = (value, hit, time.perf_counter() - t0)
            value, hit, t_feat = feats[kind]
            t0 = time.perf_counter()
            if probe == 'seg':
                metrics = run_seg(value, data.seg_num_classes(seg_size), s, seed)
            elif probe == 'knn':
                metrics = run_knn(value, len(data.split.classes), s)
            else:
                metrics = run_linear(value, len(data.split.classes), s, seed)
            t_probe = time.perf_counter() - t0
            n = ({'train': len(value['train']), 'test': len(value['test']), 'classes': data.split.classes}
                 if kind == 'cls' else {'train': len(value['train']), 'val': len(value['val']),
                                        'num_classes': data.seg_num_classes(seg_size)})
            result = ProbeResult(format=PROBE_RESULT_FORMAT, probe=probe, name=name,
                                 checkpoint=checkpoint and str(checkpoint),
                          checkpoint_meta=meta, branch=branch if checkpoint else None, arch=used_arch, seed=seed,
                          metrics=metrics, settings={**asdict(s), 'img_size': img_size, 'seg_size': seg_size},
                          data={'cls_root': data.cls_root, 'cls_val_root': data.cls_val_root,
                                'seg_root': data.seg_root, **n},
                          time_s={'features': round(t_feat, 3), 'features_cached': hit, 'probe': round(t_probe, 3)})
            path = probe_result_path(out, name, probe, seed)
            atomic_write_json(result, path, allow_nan=False)
            written.append(path)
            log(f'{name} seed {seed} {probe}: ' + ', '.join(f'{k} {v:.2f}' for k, v in metrics.items())
                + f'  (features {t_feat:.1f} s{" cached" if hit else ""}, probe {t_probe:.1f} s) -> {path}')
    return written
