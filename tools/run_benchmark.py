"""The whole benchmark as one resumable pipeline: data -> pretrain SdAE & MAE -> export -> fine-tune det & seg from each
init (SdAE, MAE, random) -> test -> report.

    python tools/run_benchmark.py --preset demo                      # what `make demo` runs (embedded data, CPU)
    python tools/run_benchmark.py --preset demo-long                 # longer embedded budget, 2 seeds
    python tools/run_benchmark.py --preset full --gpus 8 \\
        --imagenet data/imagenet/train --coco data/coco --ade data/ade/ADEChallengeData2016

Every stage is a command of the suite's own tools (the same a user would type). A finished stage leaves a marker in
`<work-dir>/stages/` and is never recomputed; an interrupted one (Ctrl-C, kill -9) is rerun with `--resume`, which
continues from its last checkpoint. `SDAE_DEMO_BUDGET=tiny` shrinks every stage to a few iterations (CI smoke run).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
LAST = '@last-checkpoint:'  # resolved when the stage starts: the newest checkpoint mmengine recorded in that work dir


def resolve(arg: str) -> str:
    if not arg.startswith(LAST):
        return arg
    work_dir = Path(arg[len(LAST):])
    record = work_dir / 'last_checkpoint'
    if not record.is_file():
        raise SystemExit(f'[benchmark] no checkpoint recorded in {work_dir} ({record} is missing): the stage that '
                         f'trains it did not save one. Rerun the pipeline; that stage will run again.')
    return record.read_text().strip()


@dataclass
class Stage:
    name: str
    cmd: list[str]
    est_s: float  # expected duration on the preset's reference machine, for the ETA
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Preset:
    pretrain: dict[str, str]  # method -> pretraining config
    det: str
    seg: str
    inits: tuple[str, ...] = ('sdae', 'mae', 'random')
    seeds: tuple[int, ...] = (0,)
    demo_data: bool = True
    est: dict[str, float] = field(default_factory=dict)  # stage kind -> seconds
    pretrain_opts: tuple[str, ...] = ()
    det_opts: tuple[str, ...] = ()
    seg_opts: tuple[str, ...] = ()


DEMO_PRETRAIN = {'sdae': 'pretrain/configs/sdae_vit-tiny-p8_demo.py',
                 'mae': 'pretrain/configs/mae_vit-tiny-p8_demo.py'}
PRESETS: dict[str, Preset] = {
    'demo': Preset(pretrain=DEMO_PRETRAIN, det='det_configs/sdae_maskrcnn_demo.py',
                   seg='seg_configs/sdae_upernet_demo.py',
                   est={'data': 40, 'pretrain': 180, 'export': 10, 'det': 130, 'det_test': 30, 'seg': 70,
                        'seg_test': 20, 'report': 20}),
    'demo-long': Preset(pretrain=DEMO_PRETRAIN, det='det_configs/sdae_maskrcnn_demo.py',
                        seg='seg_configs/sdae_upernet_demo.py', seeds=(0, 1),
                        pretrain_opts=('train_cfg.max_epochs=40',),
                        # the demo schedules are iteration based: stretch the loop and the scheduler together
                        det_opts=('train_cfg.max_iters=600', 'train_cfg.val_interval=200', 'param_scheduler.1.end=600',
                                  'param_scheduler.1.milestones=[480]'),
                        seg_opts=('train_cfg.max_iters=400', 'train_cfg.val_interval=200', 'param_scheduler.1.end=400'),
                        # measured 2026-11-26 on 2 CPU cores (1 h 42 min in all)
                        est={'data': 40, 'pretrain': 560, 'export': 6, 'det': 630, 'det_test': 17, 'seg': 170,
                             'seg_test': 11, 'report': 5}),
    'full': Preset(pretrain={'sdae': 'pretrain/configs/sdae_vit-base-p16_300e_in1k.py',
                             'mae': 'pretrain/configs/mae_vit-base-p16_300e_in1k.py'},
                   det='det_configs/sdae_maskrcnn.py', seg='seg_configs/sdae_upernet.py', demo_data=False,
                   est={'data': 0, 'pretrain': 3 * 86400, 'export': 60, 'det': 86400, 'det_test': 1800,
                        'seg': 86400, 'seg_test': 1800, 'report': 60}),
}
# CI smoke run (SDAE_DEMO_BUDGET=tiny): a few images and iterations per stage, same code paths.
TINY = {'data': ('--num-pretrain', '128', '--num-train', '8', '--num-val', '4'),
        'pretrain': ('train_cfg.max_epochs=2',),
        'det': ('train_cfg.max_iters=4', 'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=2'),
        'seg': ('train_cfg.max_iters=4', 'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=2')}


def fmt(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else f'{seconds // 60}m{seconds % 60:02d}s'


def build_stages(args: argparse.Namespace, preset: Preset, work: Path) -> list[Stage]:
    tiny = os.environ.get('SDAE_DEMO_BUDGET', '') == 'tiny'
    gpus = str(args.gpus)
    est = preset.est
    stages: list[Stage] = []

    def opts(kind: str, extra: tuple[str, ...], more: list[str]) -> list[str]:
        items = [*extra, *(TINY[kind] if tiny else ()), *more]
        return ['--cfg-options', *items] if items else []

    if preset.demo_data:
        stages.append(Stage('data', [PY, 'tools/make_demo_data.py', '--out', str(args.data_root), '--seed', '0',
                                     *(TINY['data'] if tiny else ())], est['data']))
    backbones: dict[str, Path] = {}
    for method, cfg in preset.pretrain.items():
        if method not in preset.inits:
            continue
        wd = work / f'pretrain_{method}'
        pool = args.data_root / 'pretrain' / 'train' if preset.demo_data else args.imagenet
        data_opt = [f'train_dataloader.dataset.data_root={pool}']
        stages.append(Stage(f'pretrain-{method}', ['bash', 'tools/pretrain.sh', cfg, gpus, '--work-dir', str(wd),
                                                   '--resume', *opts('pretrain', preset.pretrain_opts, data_opt)],
                            est['pretrain']))
        backbones[method] = wd / 'backbone_student.pth'
        stages.append(Stage(f'export-{method}', [PY, 'tools/export_backbone.py', f'{LAST}{wd}',
                                                 str(backbones[method]), '--branch', 'student'], est['export']))
    coco = args.data_root / 'coco' if preset.demo_data else args.coco
    ade = args.data_root / 'ade' if preset.demo_data else args.ade
    for task, cfg, root, test_est in (('det', preset.det, coco, est['det_test']),
                                      ('seg', preset.seg, ade, est['seg_test'])):
        extra = preset.det_opts if task == 'det' else preset.seg_opts
        for init in preset.inits:
            for seed in preset.seeds:
                wd = work / 'finetune' / f'{task}_{init}_seed{seed}'
                pre = ['--pretrained', str(backbones[init])] if init != 'random' else []
                more = [f'randomness.seed={seed}', *data_root_opts(task, root)]
                stages.append(Stage(f'{task}-{init}-seed{seed}', [
                    'bash', 'tools/dist_train.sh', cfg, gpus, '--work-dir', str(wd), '--resume', *pre,
                    *opts(task, extra, more)], est[task]))
                stages.append(Stage(f'{task}-{init}-seed{seed}-test', [
                    'bash', 'tools/dist_test.sh', cfg, f'{LAST}{wd}', gpus, '--work-dir', str(wd),
                    *opts(task, extra, more)], test_est))
    stages.append(Stage('report', [PY, 'tools/benchmark_report.py', str(work / 'pretrain_sdae'),
                                   str(work / 'pretrain_mae'), str(work / 'finetune'), '--baseline', 'random',
                                   '--out', str(work / 'report'), *(['--published'] if not preset.demo_data else [])],
                        est['report']))
    return stages


def data_root_opts(task: str, root: Path) -> list[str]:
    keys = ['train_dataloader.dataset.data_root', 'val_dataloader.dataset.data_root',
            'test_dataloader.dataset.data_root']
    if task == 'det':
        return [f'{k}={root}/' for k in keys] + [f'{k}={root}/annotations/instances_val.json'
                                                  for k in ('val_evaluator.ann_file', 'test_evaluator.ann_file')]
    return [f'{k}={root}/' for k in keys]


def run(stages: list[Stage], work: Path) -> int:
    marks = work / 'stages'
    marks.mkdir(parents=True, exist_ok=True)
    pending = [s for s in stages if not (marks / f'{s.name}.done').is_file()]
    done = len(stages) - len(pending)
    if done:
        print(f'[benchmark] {done}/{len(stages)} stages already finished (markers in {marks}); continuing')
    ratio_num, ratio_den = 0.0, 0.0  # actual / estimated time of the stages run now, to correct the ETA
    t_start = time.time()
    for i, stage in enumerate(pending):
        scale = min(max(ratio_num / ratio_den, 0.5), 2.0) if ratio_den else 1.0  # one odd stage must not swing the ETA
        eta = sum(s.est_s for s in pending[i:]) * scale
        print(f'\n[benchmark] stage {done + i + 1}/{len(stages)}: {stage.name} (expected {fmt(stage.est_s * scale)}, '
              f'pipeline ETA {fmt(eta)}, elapsed {fmt(time.time() - t_start)})', flush=True)
        cmd = [resolve(a) for a in stage.cmd]
        print('[benchmark] $ ' + shlex.join(cmd), flush=True)
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT), **stage.env})
        took = time.time() - t0
        if proc.returncode != 0:
            print(f'[benchmark] stage {stage.name} FAILED (exit code {proc.returncode}) after {fmt(took)}. Fix the '
                  f'cause shown above and rerun the same command: finished stages are kept, this one resumes from '
                  f'its last checkpoint.', file=sys.stderr)
            return proc.returncode
        (marks / f'{stage.name}.done').write_text(json.dumps({'cmd': cmd, 'seconds': round(took, 1)}) + '\n')
        ratio_num += took
        ratio_den += stage.est_s
    print(f'\n[benchmark] all {len(stages)} stages finished ({fmt(time.time() - t_start)} this run). '
          f'Report: {work / "report" / "report.html"}')
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='demo')
    parser.add_argument('--work-dir', type=Path, help='default: work_dirs/<preset>')
    parser.add_argument('--gpus', type=int, default=1, help='processes per stage (GPUs; CPU processes without GPUs)')
    parser.add_argument('--data-root', type=Path, default=ROOT / 'data' / 'demo', help='embedded data (demo presets)')
    parser.add_argument('--imagenet', type=Path, help='full preset: ImageNet-style folder for pretraining')
    parser.add_argument('--coco', type=Path, help='full preset: COCO root (train2017/, val2017/, annotations/)')
    parser.add_argument('--ade', type=Path, help='full preset: ADEChallengeData2016 root')
    parser.add_argument('--inits', nargs='+', choices=['sdae', 'mae', 'random'], help='default: all three')
    parser.add_argument('--seeds', nargs='+', type=int, help="fine-tuning seeds (default: the preset's)")
    parser.add_argument('--dry-run', action='store_true', help='print the stages and exit')
    args = parser.parse_args()
    preset = replace(PRESETS[args.preset], inits=tuple(args.inits or PRESETS[args.preset].inits),
                     seeds=tuple(args.seeds or PRESETS[args.preset].seeds))
    if not preset.demo_data:
        missing = [n for n in ('imagenet', 'coco', 'ade') if getattr(args, n) is None]
        if missing:
            parser.error(f'--preset {args.preset} needs ' + ' '.join(f'--{n} PATH' for n in missing))
    work = args.work_dir or ROOT / 'work_dirs' / args.preset
    stages = build_stages(args, preset, work)
    if args.dry_run:
        for s in stages:
            print(f'{s.name:<24} ~{fmt(s.est_s):>7}  {shlex.join(s.cmd)}')
        return 0
    return run(stages, work)


if __name__ == '__main__':
    sys.exit(main())
