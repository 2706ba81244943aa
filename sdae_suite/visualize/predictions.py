"""Qualitative predictions of the fine-tuned detectors and segmentors of a benchmark run: the same N validation images,
ground truth first, then each init's predictions, side by side (one PNG per task).

The drawing is mmdet's ``DetLocalVisualizer`` (boxes, masks, class names, scores) and mmseg's ``SegLocalVisualizer``
(label-map overlay); the models are built and loaded with ``mmdet.apis.init_detector`` / ``mmseg.apis.init_model``
from the config each run's work dir holds (as the test stage ran it: data roots included) and its tested checkpoint,
and the images come through the config's own test pipeline, so predictions are exactly what the test scored. Only the
grid that puts the panels side by side is matplotlib here (the visualizers draw one sample at a time).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdae_suite.contracts import RANDOM_INIT, TEST_RESULTS_FILE

TASK_TITLES = {'det': 'COCO (Mask R-CNN)', 'seg': 'ADE20K (UperNet)'}


@dataclass
class TestedRun:
    path: Path  # the run's work dir
    task: str  # det | seg
    label: str  # the init, as the report's rows name it
    config: Path  # the config as the test stage ran it
    checkpoint: Path


def _init_label(results: dict[str, Any]) -> str:
    meta = results.get('pretrained_meta') or {}
    if results.get('pretrained') is None:
        return RANDOM_INIT
    if meta.get('method'):
        return f"{meta['method']} {meta.get('epoch')}ep {meta.get('branch') or ''}".strip()
    return Path(results['pretrained']).stem


def find_tested_runs(dirs: list[Path]) -> tuple[list[TestedRun], list[str]]:
    """Every run dir under ``dirs`` with an ok test_results.json; per task and init the first by path (the lowest
    seed): one column per init. Returns (runs, notes on what was skipped)."""
    notes: list[str] = []
    found: dict[tuple[str, str], TestedRun] = {}
    files = sorted({f for d in dirs for f in ([d / TEST_RESULTS_FILE] if (d / TEST_RESULTS_FILE).is_file()
                                               else d.rglob(TEST_RESULTS_FILE))})
    for f in files:
        if 'superseded' in f.parts:  # runs the pipeline moved aside
            continue
        try:
            res = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            notes.append(f'{f}: unreadable ({e}); skipped')
            continue
        if res.get('status') != 'ok' or res.get('task') not in TASK_TITLES:
            notes.append(f'{f}: status {res.get("status")!r}, task {res.get("task")!r}; skipped')
            continue
        config = f.parent / f"{res.get('recipe')}.py"
        ckpt = Path(str(res.get('checkpoint')))
        if not config.is_file() or not ckpt.is_file():
            notes.append(f'{f.parent}: {"config " + str(config) if not config.is_file() else "checkpoint " + str(ckpt)}'
                         f' is missing; skipped')
            continue
        key = (res['task'], _init_label(res))
        found.setdefault(key, TestedRun(f.parent, res['task'], key[1], config, ckpt))
    # Pretrained inits first (by name), random init last: the reference column at the end of each row.
    runs = sorted(found.values(), key=lambda r: (r.task, r.label == RANDOM_INIT, r.label))
    return runs, notes


def _build(run: TestedRun, device: str):
    """(model, test dataset) of a run, under the run's own registry scope."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(run.config))
    if run.task == 'det':
        from mmdet.apis import init_detector
        from mmdet.registry import DATASETS

        model = init_detector(cfg, str(run.checkpoint), device=device)
    else:
        from mmseg.apis import init_model
        from mmseg.registry import DATASETS

        model = init_model(cfg, str(run.checkpoint), device=device)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    return model.eval(), dataset


def _visualizer(task: str, meta: dict[str, Any]):
    name = f'qualitative-{task}-{uuid.uuid4().hex[:8]}'  # mmengine keeps visualizers by name: one per call
    if task == 'det':
        from mmdet.visualization import DetLocalVisualizer

        vis = DetLocalVisualizer(name=name, line_width=1, alpha=0.5)
    else:
        from mmseg.visualization import SegLocalVisualizer

        vis = SegLocalVisualizer(name=name, alpha=0.6)
    vis.dataset_meta = {'classes': meta.get('classes'), 'palette': meta.get('palette')}
    return vis


def shown_detections(sample, score_thr: float, min_shown: int):
    """The detections drawn: score >= ``score_thr``, and at least the ``min_shown`` best ones whatever their score
    (a barely trained detector scores everything low; its best guesses still show what it learned)."""
    pred = sample.pred_instances
    keep = pred.scores >= score_thr
    if int(keep.sum()) < min_shown and len(pred):
        keep[pred.scores.argsort(descending=True)[:min_shown]] = True
    out = sample.clone()
    out.pred_instances = pred[keep]
    return out


def _draw(vis, task: str, image: np.ndarray, sample, gt: bool, score_thr: float, min_shown: int) -> np.ndarray:
    """image: RGB uint8 [H, W, 3] -> the visualizer's drawing of the ground truth (gt) or the prediction."""
    kw: dict[str, Any] = {'pred_score_thr': 0.0} if task == 'det' else {'with_labels': False}
    if task == 'det' and not gt:
        sample = shown_detections(sample, score_thr, min_shown)
    vis.add_datasample('sample', image, sample, draw_gt=gt, draw_pred=not gt, show=False, **kw)
    return vis.get_image()


def predict_panels(runs: list[TestedRun], num_images: int, score_thr: float, min_shown: int, device: str
                   ) -> tuple[list[str], dict[str, list[np.ndarray]], list[np.ndarray], dict[str, str], dict]:
    """Panels of one task: (image names, {label: [prediction drawings]}, ground-truth drawings, {label: per-column
    note}, dataset meta). All runs must test the same images (the same validation set)."""
    from mmcv import imread
    from mmengine.dataset import pseudo_collate

    names: list[str] | None = None
    preds: dict[str, list[np.ndarray]] = {}
    gts: list[np.ndarray] = []
    notes: dict[str, str] = {}
    meta: dict[str, Any] = {}
    for run in runs:
        model, dataset = _build(run, device)
        n = min(num_images, len(dataset))
        samples = []
        with torch.no_grad():
            for i in range(n):
                samples.append(model.test_step(pseudo_collate([dataset[i]]))[0].cpu())
        paths = [s.img_path for s in samples]
        if names is None:
            names, meta = paths, dict(dataset.metainfo)
        elif paths != names:
            raise SystemExit(f'[visualize_predictions] {run.path} tests other images than {runs[0].path} '
                             f'({Path(paths[0]).name}... vs {Path(names[0]).name}...): the runs of one task must share '
                             f'the validation set to be shown side by side')
        vis = _visualizer(run.task, meta)
        images = [imread(p, channel_order='rgb') for p in paths]
        if not gts:
            gts = [_draw(vis, run.task, im, s, True, score_thr, min_shown) for im, s in zip(images, samples)]
        preds[run.label] = [_draw(vis, run.task, im, s, False, score_thr, min_shown)
                            for im, s in zip(images, samples)]
        if run.task == 'det':
            kept = [int((s.pred_instances.scores >= score_thr).sum()) for s in samples]
            top = max((float(s.pred_instances.scores.max()) for s in samples if len(s.pred_instances)), default=0.0)
            notes[run.label] = f'{sum(kept)} detections >= {score_thr:g}, top score {top:.2f}'
        else:
            notes[run.label] = ''
        del model
    return [Path(p).name for p in names or []], preds, gts, notes, meta


def panel_figure(task: str, names: list[str], preds: dict[str, list[np.ndarray]], gts: list[np.ndarray],
                 notes: dict[str, str], meta: dict[str, Any]):
    """Rows: images; columns: ground truth, then each init. A class legend in the dataset's palette underneath."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cols = ['ground truth', *preds]
    fig, axes = plt.subplots(len(names), len(cols), figsize=(2.3 * len(cols), 2.3 * len(names) + 0.5), squeeze=False)
    for r, name in enumerate(names):
        for c, col in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(gts[r] if c == 0 else preds[col][r])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col + (f'\n{notes[col]}' if notes.get(col) else ''), fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=7)
    classes, palette = meta.get('classes') or (), meta.get('palette')
    if classes and isinstance(palette, (list, tuple)) and len(palette) >= len(classes):
        handles = [Patch(color=np.array(palette[i]) / 255.0, label=c) for i, c in enumerate(classes)]
        fig.legend(handles=handles, loc='lower center', ncol=min(len(handles), 8), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if classes else 0, 1, 1), pad=0.3)
    return fig


def visualize(dirs: list[Path], out: Path, num_images: int = 3, score_thr: float = 0.3, min_shown: int = 0,
              device: str | None = None) -> Path:
    """The whole tool: predictions_det.png / predictions_seg.png and visuals.json in ``out``."""
    import matplotlib

    matplotlib.use('Agg')
    import sdae_suite.backbones  # noqa: F401  (safe checkpoint loading; registers the ViT backbone in mmdet and mmseg)
    from sdae_suite.visualize.manifest import save_figure, write_manifest

    for d in dirs:
        if not d.is_dir():
            raise SystemExit(f'[visualize_predictions] {d}: not a folder (pass the fine-tuning work dirs, e.g. '
                             f'work_dirs/demo/finetune)')
    runs, skipped = find_tested_runs(dirs)
    for s in skipped:
        print(f'[visualize_predictions] {s}', flush=True)
    if not runs:
        raise SystemExit(f'[visualize_predictions] no tested run (test_results.json with status ok, its config and '
                         f'checkpoint) under {", ".join(map(str, dirs))}: run tools/test.py on the fine-tuned runs '
                         f'first')
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for task in TASK_TITLES:
        task_runs = [r for r in runs if r.task == task]
        if not task_runs:
            continue
        names, preds, gts, notes, meta = predict_panels(task_runs, num_images, score_thr, min_shown, device)
        save_figure(panel_figure(task, names, preds, gts, notes, meta), out / f'predictions_{task}.png', dpi=100)
        what = (f'boxes and masks with score >= {score_thr:g}'
                + (f', and at least the {min_shown} best per image whatever their score' if min_shown else '')
                + '; mmdet DetLocalVisualizer' if task == 'det' else
                'predicted label map over the image; mmseg SegLocalVisualizer')
        figures.append({'file': f'predictions_{task}.png', 'title': f'{TASK_TITLES[task]}: predictions side by side',
                        'caption': f'The first {len(names)} validation images: ground truth, then the predictions of '
                                   f'each init ({what}). Runs: '
                                   + ', '.join(f'{r.label}: {r.path}' for r in task_runs) + '.'})
    return write_manifest(out, 'Predictions side by side', figures, {
        'kind': 'predictions', 'score_thr': score_thr, 'min_shown': min_shown,
        'runs': [{'task': r.task, 'label': r.label, 'path': str(r.path), 'checkpoint': str(r.checkpoint)}
                 for r in runs]})
