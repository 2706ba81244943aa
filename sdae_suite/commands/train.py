"""Fine-tune a detector (mmdet config), a segmentor (mmseg config) or an ImageNet classifier (cls_configs/: fine-tuning
or linear probing); the config's default_scope (and, for classification, model.protocol) says which.

    python tools/train.py CONFIG [--pretrained CKPT [--pretrained-branch student|teacher]] [--work-dir DIR]
                          [--resume [CKPT]] [--amp] [--data-root DIR] [--cfg-options k=v ...]
                          [--launcher none|pytorch|slurm]

``--resume`` without a path resumes from the latest checkpoint in the work dir. Writes ``<work_dir>/run_status.json``.
Runs are seeded (``randomness.seed``, default 0 when the config sets none) and their checkpoints hold every rank's RNG
state (RNGStateHook), so a resumed run continues exactly like an uninterrupted one. On SIGTERM or SIGUSR1 (Slurm's
preemption, ``--signal=USR1@120``) the run finishes its iteration, writes a checkpoint, records status 'preempted' and
exits with status 75 (``EXIT_PREEMPTED``); ``--resume`` continues exactly there. Before anything is built, the
inputs are checked (preflight/): --cfg-options keys, the checkpoint files, and the train/val data with the checks of
tools/check_dataset.py (image headers, label maps; annotations mmdet would drop are counted in a warning).
On a machine without CUDA the run is adapted and the changes are printed: fp32 instead of AMP, gloo instead of NCCL,
and no SyncBN conversion (PyTorch's SyncBN needs CUDA). SyncBN is never used without a process group.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import sdae_suite.backbones  # noqa: F401  (registers SdAEViT & co. in mmdet and mmseg)
import sdae_suite.engine  # noqa: F401  (registers our hooks and optimizer wrapper)
from sdae_suite.backbones.pretrained import read_meta
from sdae_suite.contracts import EXIT_PREEMPTED, RunStatus
from sdae_suite.engine import preemption
from sdae_suite.engine.atomic import write_failure_exits
from sdae_suite.engine.launch import (
    adapt_cpu_launch,
    add_custom_hooks,
    join_cpu_process_group,
    replace_syncbn,
    set_dist_timeout,
)
from sdae_suite.engine.run_record import RunRecorder
from sdae_suite.preflight.checkpoints import checkpoint_file_problem
from sdae_suite.preflight.config_keys import UnknownConfigKeyError, check_option_keys
from sdae_suite.preflight.dataset import DatasetError, check_run_datasets

DEFAULT_SEED = 0  # fine-tuning runs are reproducible unless the config or --cfg-options asks otherwise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='det_configs/*.py, seg_configs/*.py or cls_configs/*.py')
    p.add_argument('--work-dir', help='default: work_dirs/<config stem>')
    p.add_argument('--pretrained', help='backbone checkpoint: exported backbone, raw pretraining run, official '
                                        'SdAE/MAE, timm or mmpretrain file')
    p.add_argument('--pretrained-branch', choices=['student', 'teacher'],
                   help='which encoder of a two-encoder checkpoint (raw pretraining run, official SdAE)')
    p.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CKPT',
                   help='resume training; without CKPT, from the latest checkpoint in the work dir')
    p.add_argument('--amp', action='store_true', help='mixed precision (CUDA only)')
    return parse_run_args(p, argv)


def parse_run_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The options tools/train.py and tools/test.py share (data root, config overrides, launcher), then parse."""
    p.add_argument('--data-root', help='the dataset root for every split of the config (the data_root of its '
                                       'train / val / test datasets): e.g. an ImageNet folder holding train/ and val/')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, key=value')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


CLS_TASKS = {'finetune': 'cls_ft', 'linear': 'cls_linear'}  # model.protocol -> task


def task_of(cfg: Config) -> str:
    """'det', 'seg', 'cls_ft' or 'cls_linear', from the config's default_scope (the toolbox it is written for; plain
    mmengine for classification, whose model.protocol says fine-tuning or linear probing)."""
    scope = cfg.get('default_scope')
    kinds = {'mmdet': 'det', 'mmseg': 'seg'}
    if scope == 'mmengine' and cfg.model.get('protocol') in CLS_TASKS:
        return CLS_TASKS[cfg.model.protocol]
    if scope not in kinds:
        raise ValueError(f"{cfg.filename}: default_scope is {scope!r}; transfer configs must inherit an mmdet or mmseg "
                         f"base config (default_scope 'mmdet' or 'mmseg'), or be a classification config "
                         f"(default_scope 'mmengine', model.protocol 'finetune' or 'linear'; cls_configs/_base_), "
                         f"so the "
                         f"launcher knows the task")
    return kinds[scope]


def set_data_root(cfg: Config, root: str | None) -> None:
    """--data-root: the data_root of every split's dataset (what --cfg-options {split}.dataset.data_root=... sets),
    and the annotation file of a COCO evaluator that lies under the old root (mmdet's CocoMetric reads its own copy of
    the path: left alone, it would score against the default location's annotations)."""
    if not root:
        return
    old_roots = set()
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = (cfg.get(split) or {}).get('dataset')
        if isinstance(dataset, dict):
            if dataset.get('data_root'):
                old_roots.add(str(dataset['data_root']))
            dataset['data_root'] = str(root)
    for key in ('val_evaluator', 'test_evaluator'):
        evaluators = cfg.get(key)
        for ev in evaluators if isinstance(evaluators, list) else [evaluators]:
            ann = ev.get('ann_file') if isinstance(ev, dict) else None
            old = next((o for o in sorted(old_roots, key=len, reverse=True) if isinstance(ann, str)
                        and ann.startswith(o)), None)
            if old is not None:
                ev['ann_file'] = str(Path(root) / ann[len(old):].lstrip('/'))


def pretrained_of(cfg: Config) -> tuple[str | None, dict | None]:
    """(checkpoint path, exported-backbone meta or None) the config's backbone is initialised from."""
    init = (cfg.model.get('backbone') or {}).get('init_cfg') or {}
    ckpt = init.get('checkpoint') if isinstance(init, dict) else None
    meta = read_meta(ckpt) if ckpt and Path(ckpt).is_file() else None
    return ckpt, meta


def adapt_to_machine(cfg: Config, launcher: str, amp: bool) -> list[str]:
    """Settings that depend on the machine rather than on the recipe. Returns the changes made, for printing."""
    notes = []
    cuda = torch.cuda.is_available()
    if launcher == 'none':
        n = replace_syncbn(cfg.model)
        if n:
            notes.append(f'no process group: {n} SyncBN layers in the config -> BN')
    if not cuda:
        if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
            cfg.optim_wrapper.type = 'FiniteGradOptimWrapper'
            cfg.optim_wrapper.pop('loss_scale', None)
            cfg.optim_wrapper.pop('dtype', None)
            notes.append('no CUDA: AmpOptimWrapper -> FiniteGradOptimWrapper (fp32)')
        if cfg.get('sync_bn'):
            cfg.sync_bn = None
            notes.append('no CUDA: sync_bn off (PyTorch SyncBN needs CUDA)')
        notes += adapt_cpu_launch(cfg, launcher)
    elif amp and cfg.optim_wrapper.get('type') != 'AmpOptimWrapper':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        notes.append('--amp: AmpOptimWrapper')
    return notes


def per_run_visualizer(cfg: Config) -> None:
    """mmdet/mmseg name their visualizer 'visualizer'; a second run in the same process would then reuse the first
    run's instance and write its curves into the first run's folder. Without a name mmengine uses the run's own."""
    if isinstance(cfg.get('visualizer'), dict):
        cfg.visualizer.pop('name', None)


def merge_options(cfg: Config, options: dict | None, config: str, tag: str) -> None:
    try:
        check_option_keys(options or {}, cfg, config)
    except UnknownConfigKeyError as e:
        raise SystemExit(f'[{tag}] {e}') from None
    if options:
        cfg.merge_from_dict(options)


def seed_and_rng_state(cfg: Config) -> str:
    """Default seed, RNG states in the checkpoints for an exact resume, and a checkpoint-and-stop on SIGTERM / SIGUSR1
    (PreemptionCheckpointHook). Returns the line printed at start."""
    randomness = dict(cfg.get('randomness') or {})
    source = 'from the config'
    if randomness.get('seed') is None:
        randomness['seed'], source = DEFAULT_SEED, 'default; set randomness.seed to change it'
    cfg.randomness = randomness
    add_custom_hooks(cfg, 'RNGStateHook', 'PreemptionCheckpointHook', 'RankHeartbeatHook')
    return (f"seed {randomness['seed']} ({source}); RNG states saved with every checkpoint; on SIGTERM / SIGUSR1 a "
            f"checkpoint after the current iteration, then exit status {EXIT_PREEMPTED}")


def add_tensorboard(cfg: Config) -> None:
    """Every fine-tuning run also writes TensorBoard event files (<work_dir>/<timestamp>/vis_data/events.out.*), next
    to mmengine's scalars.json, whatever the recipe's visualizer lists: a run property, like the machine adaptation."""
    vis = cfg.get('visualizer')
    if not isinstance(vis, dict):
        return
    backends = list(vis.get('vis_backends') or [])
    if not any(b.get('type') == 'TensorboardVisBackend' for b in backends):
        vis['vis_backends'] = [*backends, dict(type='TensorboardVisBackend')]


def build_cfg(args: argparse.Namespace) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    merge_options(cfg, args.cfg_options, args.config, 'train')
    set_data_root(cfg, args.data_root)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or str(Path('work_dirs') / Path(args.config).stem)
    per_run_visualizer(cfg)
    add_tensorboard(cfg)
    backbone = cfg.model.get('backbone', {})
    if args.pretrained or args.pretrained_branch:
        init = dict(backbone.get('init_cfg') or {'type': 'Pretrained'})
        if args.pretrained:
            init['checkpoint'] = str(Path(args.pretrained).resolve())  # recorded in the run's config and status
        if args.pretrained_branch:
            init['branch'] = args.pretrained_branch
        backbone['init_cfg'] = init
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None  # mmengine picks <work_dir>/last_checkpoint
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def check_inputs(cfg: Config) -> None:
    """Fail before any model is built on the commonest mistakes: a wrong checkpoint path, a wrong data root."""
    init = (cfg.model.get('backbone') or {}).get('init_cfg') or {}
    ckpt = init.get('checkpoint') if isinstance(init, dict) else None
    for path, what in ((ckpt, 'the pretrained backbone (--pretrained or model.backbone.init_cfg.checkpoint)'),
                       (cfg.get('load_from'), 'the checkpoint to resume or load (--resume or load_from)')):
        problem = checkpoint_file_problem(path, what) if path else None
        if problem:
            raise SystemExit(f'[train] {problem}')
    for split in ('train_dataloader', 'val_dataloader'):
        dataset = (cfg.get(split) or {}).get('dataset') or {}
        root = dataset.get('data_root')
        if root and not Path(root).is_dir():
            raise SystemExit(f'[train] dataset folder not found: {root} ({split}.dataset.data_root). For the embedded '
                             f'demo data run `make data`; for your own data pass --cfg-options '
                             f'{split}.dataset.data_root=PATH and check it with tools/check_dataset.py.')


def check_data(cfg: Config, splits: tuple[str, ...], tag: str, verbose: bool) -> None:
    """The dataset checks of tools/check_dataset.py on the data this run reads; problems stop it, drops are warned."""
    start = time.monotonic()
    try:
        lines = check_run_datasets(cfg, splits)
    except DatasetError as e:
        raise SystemExit(f'[{tag}] {e}') from None
    if verbose:
        print('\n'.join(f'[{tag}] data: {line}' for line in lines)
              + f'\n[{tag}] data checked in {time.monotonic() - start:.1f} s', flush=True)


@write_failure_exits('[train]')  # disk full: one line and exit status 1, the earlier checkpoints intact
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = build_cfg(args)
    kind = task_of(cfg)
    notes = adapt_to_machine(cfg, args.launcher, args.amp)
    notes.append(seed_and_rng_state(cfg))
    notes.append(set_dist_timeout(cfg))
    check_inputs(cfg)
    rank = int(os.environ.get('RANK', 0))
    check_data(cfg, ('train_dataloader', 'val_dataloader'), 'train', verbose=rank == 0)
    pretrained, meta = pretrained_of(cfg)
    if rank == 0:
        print(f'[train] task {kind} | config {args.config} | work dir {cfg.work_dir}\n'
              f'[train] pretrained backbone: {pretrained or "none (random init)"}'
              + (f" ({meta.get('method')} {meta.get('branch')}, epoch {meta.get('epoch')})" if meta else '')
              + f'\n[train] resume: {args.resume or "no"} | device: {"cuda" if torch.cuda.is_available() else "cpu"}'
              + ''.join(f'\n[train] {n}' for n in notes), flush=True)
    Path(cfg.work_dir).mkdir(parents=True, exist_ok=True)
    status = RunRecorder(cfg.work_dir, RunStatus(kind=kind, recipe=Path(args.config).stem, config=str(args.config),
                                                 pretrained=pretrained, pretrained_meta=meta), rank)
    join_cpu_process_group(args.launcher, cfg.env_cfg.dist_cfg.timeout)
    preemption.install()  # before the Runner forks DataLoader workers: they inherit the handler (engine/preemption.py)
    try:
        runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
        status.watch(runner)
        runner.train()
    except preemption.Preempted as stop:
        status.preempted(stop)
        print(f'[train] {stop}', flush=True)
        raise SystemExit(EXIT_PREEMPTED) from None
    except BaseException as e:
        status.finish(e)
        raise
    finally:
        preemption.uninstall()
    status.finish()


if __name__ == '__main__':
    main()
