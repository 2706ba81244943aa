"""Frozen-feature probes during pretraining: k-NN top-1 and linear-segmentation mIoU of the student encoder every
``interval`` epochs, on small held-out labelled subsets, so a run shows whether it is learning long before a fine-tune.
"""
from __future__ import annotations

import time

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from probes.suite import ProbeData, ProbeSettings, class_features, run_knn, run_seg, seg_features

from .hooks import unwrap

SCALARS = ('knn_top1', 'seg_mIoU')


@HOOKS.register_module()
class ProbeHook(Hook):
    """Runs the k-NN and linear-seg probes on the student encoder (eval mode, no grad, global RNG untouched) after
    every ``interval``-th epoch and after the last one.

    Results are logged as scalars (message hub ``probe/<name>`` and a line in scalars.json:
    ``{"probe/knn_top1", "probe/seg_mIoU", "probe/time_s", "epoch", "step"}``) and kept in every checkpoint as
    ``meta['probes'] = {'history': [{'epoch', 'knn_top1', 'seg_mIoU', 'time_s'}, ...], 'settings': {...}}``; a resumed
    run restores that history, so it holds each epoch once. The probes' own time and its share of the run so far are
    logged each time (``probe/overhead_pct``).

    Args:
        interval: epochs between probes.
        cls_data: ImageNet-style class folders (split deterministically into bank / held-out, see probes.data).
        seg_data: ADE20K-format folder (training subset for the head, validation subset for the score).
        max_train_per_class / max_test_per_class / seg_max_train / seg_max_val: subset sizes (cost).
        seg_epochs: epochs of the linear-seg head on the cached features.
        seg_size: segmentation input size (default twice the pretraining size).
    """

    priority = 'NORMAL'  # after EMATeacherHook (ABOVE_NORMAL), before CheckpointHook (VERY_LOW) writes the epoch

    def __init__(self, interval: int = 1, cls_data: str = 'data/demo/pretrain/train', cls_val: str | None = None,
                 seg_data: str = 'data/demo/ade', max_train_per_class: int | None = 40,
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
        self.data = ProbeData(cls_data, cls_val, seg_data, self.settings)
        self.history: list[dict] = []
        self.probe_s = 0.0
        self._t0: float | None = None

    def before_train(self, runner) -> None:
        self._t0 = time.perf_counter()
        t = time.perf_counter()
        arch = unwrap(runner.model).arch
        img, seg = self.settings.sizes(arch)
        self.data.cls_images(img)  # read once (counted in the probes' cost); file problems stop the run here
        self.data.seg_sets(seg)
        self.probe_s += time.perf_counter() - t
        runner.logger.info(f'ProbeHook: every {self.interval} epoch(s), k-NN on {len(self.data.split.train)} / '
                           f'{len(self.data.split.test)} images ({self.data.cls_root}), linear seg on '
                           f'{len(self.data.seg_sets(seg)[0].files)} / {len(self.data.seg_sets(seg)[1].files)} '
                           f'({self.data.seg_root}); data read in {time.perf_counter() - t:.1f} s')

    def after_train_epoch(self, runner) -> None:
        epoch = runner.epoch + 1
        if (epoch % self.interval and epoch != runner.max_epochs) or any(h['epoch'] == epoch for h in self.history):
            return
        t = time.perf_counter()
        model = unwrap(runner.model)
        img, seg = self.settings.sizes(model.arch)
        with torch.random.fork_rng(devices=[]):  # the training RNG stream (exact resume) is not consumed
            knn = run_knn(class_features(model.encoder, self.data, img), len(self.data.split.classes), self.settings)
            segm = run_seg(seg_features(model.encoder, self.data, seg), self.data.seg_num_classes(seg),
                           self.settings, self.seed)
        dt = time.perf_counter() - t
        self.probe_s += dt
        elapsed = time.perf_counter() - (self._t0 or t)
        rec = dict(epoch=epoch, knn_top1=knn['top1'], seg_mIoU=segm['mIoU'], time_s=round(dt, 3))
        self.history.append(rec)
        overhead = 100.0 * self.probe_s / max(elapsed, 1e-9)
        for k in SCALARS:
            runner.message_hub.update_scalar(f'probe/{k}', rec[k])
        runner.message_hub.update_scalar('probe/overhead_pct', overhead)
        runner.visualizer.add_scalars({'probe/knn_top1': rec['knn_top1'], 'probe/seg_mIoU': rec['seg_mIoU'],
                                       'probe/time_s': rec['time_s'], 'probe/overhead_pct': round(overhead, 2),
                                       'epoch': epoch}, step=runner.iter)
        runner.logger.info(f'probes after epoch {epoch}: k-NN top-1 {rec["knn_top1"]:.2f}, linear-seg mIoU '
                           f'{rec["seg_mIoU"]:.2f} ({dt:.1f} s; probes so far {self.probe_s:.1f} s = {overhead:.1f} % '
                           f'of this session\'s {elapsed:.0f} s)')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['probes'] = dict(
            history=sorted(self.history, key=lambda h: h['epoch']),
            settings=dict(interval=self.interval, cls_data=self.data.cls_root, seg_data=self.data.seg_root,
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
