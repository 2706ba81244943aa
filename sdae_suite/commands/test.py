"""Evaluate a fine-tuned detector, segmentor or classifier checkpoint; writes ``<work_dir>/test_results.json`` (COCO
bbox/segm AP for mmdet configs, mIoU/mAcc/aAcc for mmseg configs, top-1/top-5 for cls_configs/; the config's
default_scope says which).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--data-root DIR] [--cfg-options k=v ...]
                         [--launcher none|pytorch|slurm]

Classification: ``accuracy/top1`` and ``accuracy/top5`` are the tested checkpoint's (the last epoch's, as the pipeline
passes it); ``accuracy/top1_max`` is the best top-1 of the epochs validated during training, the number MAE's and
SdAE's ``main_finetune.py`` print as the result (from the checkpoint's record of the best score; absent when the run
did not validate during training).

Refuses, before evaluating, a checkpoint that is not a model of the config (preflight/checkpoints.py: counts and
first keys of the missing / unexpected / mis-shaped tensors), and test data with problems (tools/check_dataset.py's
checks, sdae_suite/preflight/dataset.py).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from sdae_suite.commands.train import (
    adapt_to_machine,
    check_data,
    merge_options,
    parse_run_args,
    per_run_visualizer,
    pretrained_of,
    set_data_root,
    task_of,
)
from sdae_suite.contracts import RUN_STATUS_FILE, TEST_RESULTS_FILE, TestResults, now
from sdae_suite.engine.atomic import atomic_write_json, write_failure_exits
from sdae_suite.engine.checkpoint_io import safe_torch_load
from sdae_suite.preflight.checkpoints import CheckpointFitsHook, CheckpointMismatchError, checkpoint_file_problem


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config')
    p.add_argument('checkpoint', help='a checkpoint written by tools/train.py')
    p.add_argument('--work-dir', help="default: the checkpoint's folder")
    return parse_run_args(p, argv)


def _plain(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def best_of_training(checkpoint: str) -> dict[str, float]:
    """``{'accuracy/top1_max': best top-1 over the validated epochs}`` from the checkpoint's message hub (mmengine's
    CheckpointHook ``save_best`` records it there), or {} when the run never validated."""
    hub = (safe_torch_load(checkpoint) or {}).get('message_hub') or {}
    best = (hub.get('runtime_info') or {}).get('best_score')
    return {'accuracy/top1_max': float(best)} if isinstance(best, (int, float)) else {}


@write_failure_exits('[test]')  # disk full: one line and exit status 1, the earlier results intact
def main(argv: list[str] | None = None) -> TestResults:
    args = parse_args(argv)
    problem = checkpoint_file_problem(args.checkpoint, 'the checkpoint to test')
    if problem:
        raise SystemExit(f'[test] {problem}')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    merge_options(cfg, args.cfg_options, args.config, 'test')
    set_data_root(cfg, args.data_root)
    kind = task_of(cfg)
    rank = int(os.environ.get('RANK', 0))
    check_data(cfg, ('test_dataloader',), 'test', verbose=rank == 0)
    cfg.work_dir = args.work_dir or str(Path(args.checkpoint).parent)
    cfg.load_from = args.checkpoint
    adapt_to_machine(cfg, args.launcher, amp=False)
    per_run_visualizer(cfg)
    # The pretrained backbone is a property of the training run: take it from the run's status file when there is one.
    status_file = Path(args.checkpoint).parent / RUN_STATUS_FILE
    if status_file.is_file():
        status = json.loads(status_file.read_text())
        pretrained, meta = status.get('pretrained'), status.get('pretrained_meta')
    else:
        pretrained, meta = pretrained_of(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.register_hook(CheckpointFitsHook(args.checkpoint, args.config))
    try:
        metrics = {k: _plain(v) for k, v in runner.test().items()}
    except CheckpointMismatchError as e:
        raise SystemExit(f'[test] {e}') from None
    if not metrics:
        raise RuntimeError(f'{args.checkpoint}: the evaluation returned no metrics (see the log above: usually the '
                           f'model predicted nothing above test_cfg score_thr on the whole set); no test_results.json '
                           f'written')
    if kind.startswith('cls_'):
        metrics.update(best_of_training(args.checkpoint))
    result = TestResults(task=kind, recipe=Path(args.config).stem, config=args.config, checkpoint=args.checkpoint,
                         pretrained=pretrained, pretrained_meta=meta, metrics=metrics, time=now(), status='ok')
    if rank == 0:
        out = Path(cfg.work_dir) / TEST_RESULTS_FILE
        atomic_write_json(result, out)
        print(f'[test] {kind} metrics: ' + ', '.join(f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}'
                                                   for k, v in metrics.items()) + f'\n[test] wrote {out}', flush=True)
    return result


if __name__ == '__main__':
    main()
