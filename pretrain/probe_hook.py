"""Frozen-feature probes during pretraining: k-NN top-1 and linear-segmentation mIoU of the student encoder every
``interval`` epochs, on small held-out labelled subsets, so a run shows whether it is learning long before a fine-tune.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from sdae_suite.probes.suite import ProbeData, ProbeSettings, class_features, run_knn, run_seg, seg_features

from .hooks import unwrap

SCALARS = ('knn_top1', 'seg_mIoU')


@HOOKS.register_module()
class ProbeHook(Hook):
    """Runs the k-NN and linear-seg probes on the student encoder (eval mode, no grad, global RNG untouched) after
    every ``interval``-th epoch and after the last one, in the main process only: the other ranks would compute the
    same numbers (same weights, same data) for nothing, and only the main process writes checkpoints and logs.

    Results are logged as scalars (message hub ``probe/<name>`` and a line in scalars.json:
    ``{"probe/knn_top1", "probe/seg_mIoU", "probe/time_s", "epoch", "step"}``) and kept in every checkpoint as
    ``meta['probes'] = {'history': [{'epoch', 'knn_top1', 'seg_mIoU', 'time_s'}, ...], 'settings': {...}}``; a resumed
    run restores that history, so it holds each epoch once. The probes' own time and its share of the run so far are
    logged each time (``probe/overhead_pct``).

    Args:
        interval: epochs between probes.
        cls_data: ImageNet-style class folders (split deterministically into bank / held-out, see probes.data);
            None: the training set's own ``data_root`` (the demo pool is in class folders), so a run whose data root
            is overridden (tools/run_benchmark.py) probes that data.
        cls_val: held-out class folders (real data: ImageNet val); None: split ``cls_data``.
        seg_data: ADE20K-format folder (training subset for the head, validation subset for the score); None: the
            demo layout's ``<data_root>/../../ade`` when it exists, else the seg probe is left out (logged).
        max_train_per_class / max_test_per_class / seg_max_train / seg_max_val: subset sizes (cost).
        seg_epochs: epochs of the linear-seg head on the cached features.
        seg_size: segmentation input size (default twice the pretraining size).
    """

    priority = 'NORMAL'  # after EMATeacherHook (ABOVE_NORMAL), before CheckpointHook (VERY_LOW) writes the epoch

    def __init__(self, interval: int = 1, cls_data: str | None = None, cls_val: str | None = None,
                 seg_data: str | None = None, max_train_per_class: int | None = 40,
                 max_test_per_class: int | None = 15, seg_max_train: int | None = 32, seg_max_val: int | None = 16,
                 seg_epochs: int = 10, seg_size: int | None = None, seg_num_classes: int | None = None,
                 knn_k: int = 20, knn_temperature: float = 0.07, seed: int = 0):
        if interval < 1:
            raise ValueError(f'ProbeHook: interval must be >= 1, got {interval}')
        self.interval, self.seed = interval, seed
        self.settings = ProbeSettings(seg_size=seg_size, knn_k=knn_k, knn_temperature=knn_temperature,
                                      max_train_per_class=max_train_per_class, max_test_per_class=max_test_per_class,
                                      seg_max_train=seg_max_train, seg_max_val=seg_max_val,
                                      seg_num_classes=seg_num_classes, seg_epochs=seg_epochs)
        self.cls_data, self.cls_val, self.seg_data = cls_data, cls_val, seg_data
        self.data: ProbeData | None = None
        self.history: list[dict] = []
        self.probe_s = 0.0
        self._t0: float | None = None

    def _resolve_data(self, runner) -> ProbeData:
        root = (runner.cfg.get('train_dataloader') or {}).get('dataset', {}).get('data_root')
        cls_data = self.cls_data or root
        if cls_data is None:
            raise ValueError('ProbeHook: no cls_data and no train_dataloader.dataset.data_root to fall back on; set '
                             "custom_hooks=[..., dict(type='ProbeHook', cls_data='/data/imagenet/val', ...)]")
        seg_data = self.seg_data
        if seg_data is None and root is not None and (Path(root).parent.parent / 'ade').is_dir():
            seg_data = str(Path(root).parent.parent / 'ade')  # the demo layout: <data>/pretrain/train, <data>/ade
        if seg_data is None:
            runner.logger.warning('ProbeHook: no seg_data given and no demo-layout ade folder next to the training '
                                  'data: the linear-seg probe is left out (pass seg_data=<ADE20K-format folder>)')
        return ProbeData(str(cls_data), self.cls_val, seg_data, self.settings)

    def before_train(self, runner) -> None:
        if not is_main_process():
            return
        self._t0 = time.perf_counter()
        t = time.perf_counter()
        self.data = self._resolve_data(runner)
        arch = unwrap(runner.model).arch
        img, seg = self.settings.sizes(arch)
        self.data.cls_images(img)  # read once (counted in the probes' cost); file problems stop the run here
        seg_info = 'no linear seg'
        if self.data.seg_root is not None:
            train, val = self.data.seg_sets(seg)
            seg_info = f'linear seg on {len(train.files)} / {len(val.files)} images ({self.data.seg_root})'
        self.probe_s += time.perf_counter() - t
        runner.logger.info(f'ProbeHook: every {self.interval} epoch(s), k-NN on {len(self.data.split.train)} / '
                           f'{len(self.data.split.test)} images ({self.data.cls_root}), {seg_info}; data read in '
                           f'{time.perf_counter() - t:.1f} s')

    def after_train_epoch(self, runner) -> None:
        if self.data is None:  # not the main process
            return
        epoch = runner.epoch + 1
        if (epoch % self.interval and epoch != runner.max_epochs) or any(h['epoch'] == epoch for h in self.history):
            return
        t = time.perf_counter()
        model = unwrap(runner.model)
        img, seg = self.settings.sizes(model.arch)
        data = self.data
        with torch.random.fork_rng(devices=[]):  # the training RNG stream (exact resume) is not consumed
            rec = dict(epoch=epoch, knn_top1=run_knn(class_features(model.encoder, data, img),
                                                     len(data.split.classes), self.settings)['top1'])
            if data.seg_root is not None:
                rec['seg_mIoU'] = run_seg(seg_features(model.encoder, data, seg), data.seg_num_classes(seg),
                                          self.settings, self.seed)['mIoU']
        dt = time.perf_counter() - t
        self.probe_s += dt
        elapsed = time.perf_counter() - (self._t0 or t)
        rec['time_s'] = round(dt, 3)
        self.history.append(rec)
        overhead = 100.0 * self.probe_s / max(elapsed, 1e-9)
        scalars = {f'probe/{k}': rec[k] for k in SCALARS if k in rec}
        for k, v in scalars.items():
            runner.message_hub.update_scalar(k, v)
        runner.message_hub.update_scalar('probe/overhead_pct', overhead)
        runner.visualizer.add_scalars({**scalars, 'probe/time_s': rec['time_s'],
                                       'probe/overhead_pct': round(overhead, 2), 'epoch': epoch}, step=runner.iter)
        seg_text = f', linear-seg mIoU {rec["seg_mIoU"]:.2f}' if 'seg_mIoU' in rec else ''
        runner.logger.info(f'probes after epoch {epoch}: k-NN top-1 {rec["knn_top1"]:.2f}{seg_text} ({dt:.1f} s; '
                           f'probes so far {self.probe_s:.1f} s = {overhead:.1f} % of this session\'s {elapsed:.0f} s)')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['probes'] = dict(
            history=sorted(self.history, key=lambda h: h['epoch']),
            settings=dict(interval=self.interval, cls_data=self.data and self.data.cls_root,
                          seg_data=self.data and self.data.seg_root,
                          **{k: v for k, v in vars(self.settings).items()}))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta') or {}
        done = int(meta.get('epoch', 0) or 0)
        hist = ((meta.get('probes') or {}).get('history')) or []
        # Only what the checkpoint's epochs produced: a later probe of a run that died after it is recomputed.
        self.history = [dict(h) for h in hist if int(h['epoch']) <= done]

    def after_train(self, runner) -> None:
        if self._t0 is not None:
            total = time.perf_counter() - self._t0
            runner.logger.info(f'ProbeHook: {len(self.history)} probe points; probes took {self.probe_s:.1f} s of '
                               f'this session\'s {total:.1f} s ({100 * self.probe_s / max(total, 1e-9):.1f} %)')
