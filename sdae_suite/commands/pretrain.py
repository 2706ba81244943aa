#!/usr/bin/env python
"""SdAE / MAE pretraining, one process (tools/pretrain.sh starts one per GPU through torchrun).

    python tools/pretrain.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]

Derived settings (world size, effective batch, lr = blr * batch / 256, precision, schedule) are computed here from the
actual run and printed before training starts. Writes <work_dir>/run_status.json (running / finished / failed /
preempted). On SIGTERM or SIGUSR1 the run finishes its iteration, writes a checkpoint and exits with status 75
(``EXIT_PREEMPTED``); ``--resume`` continues exactly there, in the middle of the epoch.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from mmengine.config import Config, DictAction

import sdae_suite.pretrain  # noqa: F401  (registers the model, dataset, hooks)
from sdae_suite.contracts import EXIT_PREEMPTED, LAST_CHECKPOINT_FILE, RunStatus
from sdae_suite.engine import preemption
from sdae_suite.engine.atomic import WriteFailedError, write_failure_exits
from sdae_suite.engine.hooks import NonFiniteWeightsError
from sdae_suite.engine.launch import adapt_cpu_launch, add_custom_hooks, join_cpu_process_group, set_dist_timeout
from sdae_suite.engine.optim_wrapper import NonFiniteGradientError
from sdae_suite.engine.run_record import RunRecorder
from sdae_suite.preflight.config_keys import UnknownConfigKeyError, check_option_keys
from sdae_suite.pretrain.data import CorruptImageError, ImageFolderPretrainDataset
from sdae_suite.pretrain.model import NonFiniteLossError, _check_kwargs, validate_model_cfg


class ConfigError(ValueError):
    """A pretraining config that cannot run as written (the message names the key and the fix)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config')
    p.add_argument('--work-dir', help='default: work_dirs/<config name>')
    p.add_argument('--resume', nargs='?', const='auto', default=None,
                   help='resume from CKPT, or from the latest checkpoint in the work dir when no path is given')
    p.add_argument('--amp', action='store_true', help='mixed precision (also on with `amp = True` in the config)')
    p.add_argument('--launcher', choices=['auto', 'none', 'pytorch', 'slurm'], default='auto',
                   help="auto: 'pytorch' under torchrun with more than one process, else 'none'")
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={}, help='override config keys, k=v')
    return p.parse_args(argv)


def world_and_rank(launcher: str) -> tuple[str, int, int]:
    if launcher == 'slurm':
        return launcher, int(os.environ.get('SLURM_NTASKS', 1)), int(os.environ.get('SLURM_PROCID', 0))
    world, rank = int(os.environ.get('WORLD_SIZE', 1)), int(os.environ.get('RANK', 0))
    if launcher == 'auto':
        launcher = 'pytorch' if world > 1 else 'none'
    return launcher, world, rank


def load_config(args: argparse.Namespace) -> Config:
    if not Path(args.config).is_file():
        raise ConfigError(f'config not found: {args.config}')
    cfg = Config.fromfile(args.config)
    try:
        check_option_keys(args.cfg_options, cfg, args.config)
    except UnknownConfigKeyError as e:
        raise ConfigError(str(e)) from None
    cfg.merge_from_dict(args.cfg_options)
    # exact resume, a checkpoint on SIGTERM / SIGUSR1, the rank that stops answering named
    add_custom_hooks(cfg, 'RNGStateHook', 'PreemptionCheckpointHook', 'RankHeartbeatHook')
    try:
        validate_model_cfg(cfg.model)
        dataset = dict(cfg.train_dataloader.dataset)
        dataset.pop('type', None)
        _check_kwargs(ImageFolderPretrainDataset.__init__, dataset, 'train_dataloader.dataset')
    except ValueError as e:
        raise ConfigError(f'{args.config}: {e}') from None
    if 'blr' not in cfg or 'warmup_epochs' not in cfg:
        raise ConfigError(f'{args.config}: needs `blr` (lr per 256 images) and `warmup_epochs` (see pretrain/configs)')
    return cfg


def derive(cfg: Config, args: argparse.Namespace) -> dict:
    """Fill in what depends on the actual run; returns the numbers printed at start."""
    launcher, world, rank = world_and_rank(args.launcher)
    cfg.launcher = launcher
    cuda = torch.cuda.is_available()
    adapt_cpu_launch(cfg, launcher)
    accum = int(cfg.optim_wrapper.get('accumulative_counts', 1))
    batch = cfg.train_dataloader.batch_size * world * accum
    lr = cfg.blr * batch / 256
    cfg.optim_wrapper.optimizer.lr = lr

    precision = 'fp32'
    if args.amp or cfg.get('amp', False):
        if cuda:
            precision = 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.dtype = 'bfloat16' if precision == 'bf16' else 'float16'
            cfg.optim_wrapper.loss_scale = 'dynamic'
        else:
            precision = 'fp32 (AMP requested, but there is no GPU)'

    epochs, warmup = cfg.train_cfg.max_epochs, cfg.warmup_epochs
    if not 0 <= warmup < epochs:
        raise ConfigError(f'warmup_epochs ({warmup}) must be smaller than train_cfg.max_epochs ({epochs})')
    warm, cos = cfg.param_scheduler
    warm.update(begin=0, end=warmup)
    cos.update(begin=warmup, end=epochs, T_max=epochs - warmup)
    if warmup == 0:
        cfg.param_scheduler = [cos]

    cfg.work_dir = args.work_dir or cfg.get('work_dir') or str(Path('work_dirs') / Path(args.config).stem)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    timeout = set_dist_timeout(cfg)
    return dict(launcher=launcher, world=world, rank=rank, accum=accum, batch=batch, lr=lr, precision=precision,
                epochs=epochs, warmup=warmup, timeout=timeout)


def _last_checkpoint(work_dir: str) -> str:
    f = Path(work_dir) / LAST_CHECKPOINT_FILE
    return f.read_text().strip() if f.is_file() else 'none (no epoch finished)'


@write_failure_exits('[pretrain] FAILED:')  # a failed write outside the run (run_status.json): one line too
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args)
        info = derive(cfg, args)
    except ConfigError as e:
        print(f'config error: {e}', file=sys.stderr)
        return 2
    main_rank = info['rank'] == 0
    if main_rank:
        m = cfg.model
        print(f"[pretrain] {m.objective} | world size {info['world']} | effective batch {info['batch']} "
              f"(= {cfg.train_dataloader.batch_size} per process x {info['world']} x {info['accum']} accumulation) | "
              f"lr {info['lr']:.4g} (= blr {cfg.blr:g} x {info['batch']} / 256) | {info['precision']} | "
              f"{info['epochs']} epochs, {info['warmup']} warmup | work dir {cfg.work_dir}", flush=True)
        if info['world'] > 1:
            print(f"[pretrain] {info['timeout']}; a rank that stops answering is named in the log", flush=True)
        if args.resume == 'auto' and not (Path(cfg.work_dir) / LAST_CHECKPOINT_FILE).is_file():
            print(f'[pretrain] --resume: no checkpoint in {cfg.work_dir} yet, starting from scratch', flush=True)
    status = RunRecorder(cfg.work_dir, RunStatus(kind='pretrain', recipe=Path(args.config).stem, config=args.config),
                         info['rank'])

    from mmengine.runner import Runner
    join_cpu_process_group(info['launcher'], cfg.env_cfg.dist_cfg.timeout)
    preemption.install()  # before the Runner forks DataLoader workers: they inherit the handler (engine/preemption.py)
    try:
        runner = Runner.from_cfg(cfg)
        status.watch(runner)
        runner.train()
        if info['launcher'] != 'none' and torch.distributed.is_initialized():
            # No rank tears the process group down while another still writes its last checkpoint: a gloo group
            # destroyed under a peer's feet aborted a rank once in CI ("terminate called without an active exception").
            torch.distributed.barrier()
    except preemption.Preempted as stop:
        status.preempted(stop)
        print(f'[pretrain] {stop}', flush=True)
        return EXIT_PREEMPTED
    except BaseException as e:  # the status file must say 'failed' whatever stopped the run
        msg = _explain(e, cfg.work_dir)
        status.finish(msg)
        print(f'[pretrain] FAILED: {msg}', file=sys.stderr, flush=True)
        if isinstance(e, (NonFiniteLossError, NonFiniteGradientError, NonFiniteWeightsError, CorruptImageError,
                          FileNotFoundError, KeyboardInterrupt, WriteFailedError)) or _no_full_batch(e):
            return 1
        raise
    finally:
        preemption.uninstall()
        if info['launcher'] != 'none' and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    status.finish()
    return 0


def _no_full_batch(e: BaseException) -> bool:
    # mmengine's only sign of an epoch with no iteration: its schedulers refuse an epoch length of 0.
    return isinstance(e, AssertionError) and 'epoch_length' in str(e) and 'got 0' in str(e)


def _explain(e: BaseException, work_dir: str) -> str:
    if _no_full_batch(e):
        return ('the training set has fewer images per process than train_dataloader.batch_size, so with '
                'drop_last=True (as the official recipe) an epoch has no iteration: use more images, fewer processes, '
                'a smaller batch_size, or --cfg-options train_dataloader.drop_last=False')
    if isinstance(e, (NonFiniteLossError, NonFiniteGradientError)):
        return f'{e} Last good checkpoint: {_last_checkpoint(work_dir)}'
    if isinstance(e, NonFiniteWeightsError):
        return str(e)  # names the last good checkpoint itself
    if isinstance(e, CorruptImageError):
        # Raised in a DataLoader worker, the message carries the worker's traceback; its last line is ours.
        return str(e).strip().splitlines()[-1].split('CorruptImageError: ', 1)[-1]
    if isinstance(e, WriteFailedError):
        return str(e)  # one line: the file, the bytes it needed, the bytes free, the fix
    if isinstance(e, KeyboardInterrupt):
        return f'interrupted; resume with --resume (last checkpoint: {_last_checkpoint(work_dir)})'
    return f'{type(e).__name__}: {e}'


if __name__ == '__main__':
    sys.exit(main())
