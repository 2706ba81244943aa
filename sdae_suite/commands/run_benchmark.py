"""The whole benchmark as one resumable pipeline: data -> pretrain SdAE & MAE -> export -> frozen-feature probes (k-NN,
linear, linear-seg) of each init -> ImageNet-style fine-tuning and linear probing, and det & seg fine-tuning, from each
init (SdAE, MAE, random) -> test -> report.

    python tools/run_benchmark.py --preset demo                      # what `make demo` runs (embedded data, CPU)
    python tools/run_benchmark.py --preset demo-long                 # longer embedded budget, 2 seeds
    python tools/run_benchmark.py --preset full --gpus 8 \\
        --imagenet data/imagenet --coco data/coco --ade data/ade/ADEChallengeData2016

Every stage is a command of the suite's own tools (the same a user would type), run with this pipeline's Python
(exported as PYTHON to the tools/*.sh launchers). A finished stage leaves a record in `<work-dir>/stages/<name>.done`
of what it was computed with: its command, budget and configs (content, `_base_` files included) and the files it read
and wrote (content hash when small, size + mtime for checkpoints). It is reused only while all of these match. When
they do not (e.g. a `SDAE_DEMO_BUDGET=tiny` run, then `make demo` in the same work dir) the stage is recomputed and the
pipeline says why; a training stage then starts from scratch: its old work dir is moved to
`<work-dir>/superseded/<time>/`, never resumed from checkpoints of other settings, never deleted. Recompute, not stop:
the mismatch is almost always an intended change of settings, and nothing is lost. An interrupted stage (Ctrl-C,
kill -9) with unchanged settings is rerun with `--resume` and continues from its last checkpoint. Changes to the
suite's code or to the interpreter are not part of the record: after such a change, pass a new --work-dir (or delete
`<work-dir>/stages/`) to recompute.

A stage preempted on purpose (SIGTERM / SIGUSR1: it writes a checkpoint and exits with EXIT_PREEMPTED, or, under
torchrun, leaves run_status.json saying 'preempted') is interrupted, not failed: the pipeline stops with exit status
EXIT_PREEMPTED and says to rerun, which resumes it.

On a Slurm cluster, `--slurm PARTITION` submits one job per stage still to run, chained by the stage graph (each
stage's `needs`) as job dependencies, instead of running them here (sdae_suite/pipeline/slurm.py):

    python tools/run_benchmark.py --preset full --gpus 8 --imagenet ... --slurm gpu --nodes-per-job 2 --time 24:00:00

One pipeline per work dir: a second one started there stops at once, naming the PID of the one that holds
`<work-dir>/pipeline.lock` (an flock: the kernel releases it when the holder dies, even by kill -9).
`SDAE_DEMO_BUDGET=tiny` shrinks every stage to a few iterations (CI smoke run).
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sdae_suite import REPO_ROOT
from sdae_suite.contracts import (
    EXIT_PREEMPTED,
    LAST_CHECKPOINT_FILE,
    PROBES,
    RANDOM_INIT,
    RUN_STATUS_FILE,
    TEST_RESULTS_FILE,
    probe_result_path,
)
from sdae_suite.pipeline import slurm
from sdae_suite.pipeline.graph import check_graph, critical_path
from sdae_suite.pipeline.state import (
    LAST,
    WorkDirLocked,
    config_digest,
    file_identity,
    identity_changes,
    input_identity,
    last_checkpoint,
    read_record,
    recipe_changes,
    recipe_key,
    work_dir_lock,
    write_record,
)

ROOT = REPO_ROOT
PY = sys.executable


def resolve(arg: str) -> str:
    if not arg.startswith(LAST):
        return arg
    work_dir = Path(arg[len(LAST):])
    ckpt = last_checkpoint(work_dir)
    if ckpt is None:
        raise SystemExit(f'[benchmark] no checkpoint recorded in {work_dir} ({work_dir / "last_checkpoint"} is missing '
                         f'or empty): the stage that trains it did not save one. Rerun the pipeline; that stage will '
                         f'run again.')
    return str(ckpt)


@dataclass
class Stage:
    name: str
    cmd: list[str]
    est_s: float  # expected duration on the preset's reference machine, for the ETA
    env: dict[str, str] = field(default_factory=dict)
    budget: str = 'default'  # SDAE_DEMO_BUDGET
    configs: list[str] = field(default_factory=list)  # config files of the command: their content is in the key
    inputs: list[str] = field(default_factory=list)  # files it reads (or LAST + a work dir): reuse needs them unchanged
    outputs: list[str] = field(default_factory=list)  # files it writes: reuse needs them unchanged too
    work_dir: Path | None = None  # the training work dir it resumes from: moved aside when the stage is recomputed
    # The stage graph, in this one place: the stages whose results it needs (the local pipeline runs them first; under
    # --slurm each is a job dependency). sdae_suite.pipeline.graph.check_graph proves it covers every file it reads.
    needs: tuple[str, ...] = ()
    after_failures: bool = False  # runs once its needs have ended, failed or not (the report shows what failed)
    resources: str = 'cpu'  # under --slurm: 'train' (--nodes-per-job nodes, GPUs), 'gpu' (one node, GPUs), 'cpu'

    def recipe(self) -> dict[str, Any]:
        """What the stage computes with; its hash is the key of the stage's record. The interpreter is left out: the
        same environment may be reached by several paths."""
        return {'cmd': ['<python>' if a == PY else a for a in self.cmd], 'env': self.env, 'budget': self.budget,
                'configs': {c: config_digest(ROOT / c) for c in self.configs}}

    def to_json(self) -> dict[str, Any]:
        """The stage as a Slurm job runs it (<work>/slurm/stages/<name>.json)."""
        return {**asdict(self), 'work_dir': None if self.work_dir is None else str(self.work_dir)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stage:
        wd = data.get('work_dir')
        return cls(**{**data, 'work_dir': None if wd is None else Path(wd), 'needs': tuple(data.get('needs', ()))})


@dataclass
class Preset:
    pretrain: dict[str, str]  # method -> pretraining config
    det: str
    seg: str
    cls: dict[str, str]  # classification task ('cls_ft', 'cls_linear') -> config
    inits: tuple[str, ...] = ('sdae', 'mae', 'random')
    seeds: tuple[int, ...] = (0,)
    probe_seeds: tuple[int, ...] = (0, 1, 2)  # a win needs >= 2 seeds a side; the probes are cheap enough for 3
    demo_data: bool = True
    est: dict[str, float] = field(default_factory=dict)  # stage kind ('pretrain-<method>' or 'pretrain') -> seconds
    pretrain_opts: tuple[str, ...] = ()
    det_opts: tuple[str, ...] = ()
    seg_opts: tuple[str, ...] = ()
    cls_opts: tuple[str, ...] = ()


# mmengine's IterBasedTrainLoop validates at the last iteration whatever val_interval says; in the demo that is the very
# evaluation the test stage makes next (~10 s per Mask R-CNN run on 2 cores). A val_begin past the end skips it.
NO_TRAIN_VAL = ('train_cfg.val_begin=1000000000',)
DEMO_PRETRAIN = {'sdae': 'pretrain/configs/sdae_vit-tiny-p8_demo.py',
                 'mae': 'pretrain/configs/mae_vit-tiny-p8_demo.py'}
DEMO_CLS = {'cls_ft': 'cls_configs/sdae_vit-tiny-p8_1xb64-ft_demo.py',
            'cls_linear': 'cls_configs/sdae_vit-tiny-p8_1xb32-linear_demo.py'}
PRESETS: dict[str, Preset] = {
    # 'probe': 5 encoders (2 pretrained, 3 random draws) x 1,200 pool + 200 ADE images and 3 x 3 linear / linear-seg
    # heads took 57 s in `make demo` on 2 idle cores (2026-12-03); classification (2026-12-05, 2 idle cores): 69-72 s
    # per fine-tuning, 30-31 s per linear probing, 6 s per test
    'demo': Preset(pretrain=DEMO_PRETRAIN, det='det_configs/sdae_maskrcnn_demo.py',
                   seg='seg_configs/sdae_upernet_demo.py', cls=DEMO_CLS, det_opts=NO_TRAIN_VAL, seg_opts=NO_TRAIN_VAL,
                   cls_opts=NO_TRAIN_VAL,
                   est={'data': 40, 'pretrain-sdae': 150, 'pretrain-mae': 100, 'export': 10, 'probe': 60, 'det': 130,
                        'det_test': 30, 'seg': 70, 'seg_test': 20, 'cls_ft': 75, 'cls_ft_test': 8, 'cls_linear': 35,
                        'cls_linear_test': 8, 'report': 20, 'visualize': 25}),
    'demo-long': Preset(pretrain=DEMO_PRETRAIN, det='det_configs/sdae_maskrcnn_demo.py',
                        seg='seg_configs/sdae_upernet_demo.py', cls=DEMO_CLS, seeds=(0, 1),
                        pretrain_opts=('train_cfg.max_epochs=40',),
                        # the demo schedules are iteration based: stretch the loop and the scheduler together
                        det_opts=('train_cfg.max_iters=600', 'train_cfg.val_interval=200', 'param_scheduler.1.end=600',
                                  'param_scheduler.1.milestones=[480]'),
                        seg_opts=('train_cfg.max_iters=400', 'train_cfg.val_interval=200', 'param_scheduler.1.end=400'),
                        # the classification demos are epoch based: 4x the epochs, cosine stretched with them
                        cls_opts=('train_cfg.max_epochs=12', 'train_cfg.val_interval=4', 'param_scheduler.1.end=12',
                                  'param_scheduler.1.T_max=11'),
                        # measured 2026-12-03 on 2 idle CPU cores (a fresh clone, --seeds 0: 1 h 26 min)
                        est={'data': 40, 'pretrain-sdae': 1030, 'pretrain-mae': 600, 'export': 12, 'probe': 55,
                             'det': 850, 'det_test': 25, 'seg': 245, 'seg_test': 20, 'cls_ft': 200, 'cls_ft_test': 12,
                             'cls_linear': 150, 'cls_linear_test': 12, 'report': 5, 'visualize': 30}),
    'full': Preset(pretrain={'sdae': 'pretrain/configs/sdae_vit-base-p16_300e_in1k.py',
                             'mae': 'pretrain/configs/mae_vit-base-p16_300e_in1k.py'},
                   det='det_configs/sdae_maskrcnn.py', seg='seg_configs/sdae_upernet.py',
                   cls={'cls_ft': 'cls_configs/sdae_vit-base-p16_8xb128-ft-100e_in1k.py',
                        'cls_linear': 'cls_configs/sdae_vit-base-p16_8xb512-accum4-linear-90e_in1k.py'},
                   demo_data=False,
                   # classification: MAE reports ~7 h for 100 fine-tuning epochs of ViT-B on 64 V100s (~2.3 days on 8);
                   # linear probing is forward-only through a frozen encoder (90 epochs, about a third of that)
                   est={'data': 0, 'pretrain': 3 * 86400, 'export': 60, 'probe': 7200, 'det': 86400, 'det_test': 1800,
                        'seg': 86400, 'seg_test': 1800, 'cls_ft': 2 * 86400, 'cls_ft_test': 600,
                        'cls_linear': 20 * 3600, 'cls_linear_test': 600, 'report': 60, 'visualize': 300}),
}
# CI smoke run (SDAE_DEMO_BUDGET=tiny): a few images and iterations per stage, same code paths.
TINY = {'data': ('--num-pretrain', '128', '--num-pool-val', '48', '--num-train', '8', '--num-val', '4'),
        'pretrain': ('train_cfg.max_epochs=2',),
        'det': ('train_cfg.max_iters=4', 'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=2'),
        'seg': ('train_cfg.max_iters=4', 'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=2'),
        'cls_ft': ('train_cfg.max_epochs=2', 'param_scheduler.1.end=2', 'param_scheduler.1.T_max=1'),
        'cls_linear': ('train_cfg.max_epochs=2', 'param_scheduler.1.end=2', 'param_scheduler.1.T_max=1'),
        'probe': ('--max-train-per-class', '8', '--max-test-per-class', '4', '--max-seg-train', '8',
                  '--max-seg-val', '4')}
# Real data: the probes run on CPU with every image and feature in memory. ImageNet has 1,000 classes and ADE 20k
# training images at 448 px (~50 GB of patch features for ViT-B): these caps keep it to a few GB.
FULL_PROBE_CAPS = ('--max-train-per-class', '50', '--max-test-per-class', '10', '--max-seg-train', '1000',
                   '--max-seg-val', '500')


def fmt(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else f'{seconds // 60}m{seconds % 60:02d}s'


def build_stages(args: argparse.Namespace, preset: Preset, work: Path) -> list[Stage]:
    tiny = os.environ.get('SDAE_DEMO_BUDGET', '') == 'tiny'
    budget = 'tiny' if tiny else 'default'
    gpus = str(args.gpus)
    est = preset.est
    stages: list[Stage] = []
    # The demo data's meta.json is written last and describes the whole set: its content stands for the data.
    data_meta = [str(args.data_root / 'meta.json')] if preset.demo_data else []

    def opts(kind: str, extra: tuple[str, ...], more: list[str]) -> list[str]:
        items = [*extra, *(TINY[kind] if tiny else ()), *more]
        return ['--cfg-options', *items] if items else []

    if preset.demo_data:
        stages.append(Stage('data', [PY, 'tools/make_demo_data.py', '--out', str(args.data_root), '--seed', '0',
                                     *(TINY['data'] if tiny else ())], est['data'], budget=budget, outputs=data_meta))
    data = ('data',) if preset.demo_data else ()  # what every stage reading the data needs
    backbones: dict[str, Path] = {}
    for method, cfg in preset.pretrain.items():
        if method not in preset.inits:
            continue
        wd = work / f'pretrain_{method}'
        pool = args.data_root / 'pretrain' / 'train' if preset.demo_data else args.imagenet / 'train'
        data_opt = [f'train_dataloader.dataset.data_root={pool}']
        stages.append(Stage(f'pretrain-{method}', ['bash', 'tools/pretrain.sh', cfg, gpus, '--work-dir', str(wd),
                                                   '--resume', *opts('pretrain', preset.pretrain_opts, data_opt)],
                            est.get(f'pretrain-{method}', est.get('pretrain', 0)), budget=budget, configs=[cfg],
                            inputs=data_meta, outputs=[str(wd / LAST_CHECKPOINT_FILE)], work_dir=wd, needs=data,
                            resources='train'))
        backbones[method] = wd / 'backbone_student.pth'
        stages.append(Stage(f'export-{method}', [PY, 'tools/export_backbone.py', f'{LAST}{wd}',
                                                 str(backbones[method]), '--branch', 'student'], est['export'],
                            budget=budget, inputs=[f'{LAST}{wd}'], outputs=[str(backbones[method])],
                            needs=(f'pretrain-{method}',)))
    exports = tuple(f'export-{method}' for method in backbones)
    probe = probe_stage(args, preset, work, backbones, budget, data_meta, (*data, *exports))
    stages += [probe] if probe else []
    results: list[str] = []  # every test result: the report's inputs
    tests: list[str] = []  # the stages that write them
    coco = args.data_root / 'coco' if preset.demo_data else args.coco
    ade = args.data_root / 'ade' if preset.demo_data else args.ade
    # ImageNet-format tree: the demo pool (pretrain/{train,val}) or ImageNet (train/, val/)
    imagenet = args.data_root / 'pretrain' if preset.demo_data else args.imagenet
    tasks = [('det', preset.det, coco, est['det_test'], preset.det_opts),
             ('seg', preset.seg, ade, est['seg_test'], preset.seg_opts),
             *((task, cfg, imagenet, est[f'{task}_test'], preset.cls_opts) for task, cfg in preset.cls.items())]
    for task, cfg, root, test_est, extra in tasks:
        for init in preset.inits:
            for seed in preset.seeds:
                wd = work / 'finetune' / f'{task}_{init}_seed{seed}'
                pre = ['--pretrained', str(backbones[init])] if init != 'random' else []
                more = [f'randomness.seed={seed}', *data_root_opts(task, root, preset.demo_data)]
                stages.append(Stage(f'{task}-{init}-seed{seed}', [
                    'bash', 'tools/dist_train.sh', cfg, gpus, '--work-dir', str(wd), '--resume', *pre,
                    *opts(task, extra, more)], est[task], budget=budget, configs=[cfg],
                    inputs=[*data_meta, *pre[1:]], outputs=[str(wd / LAST_CHECKPOINT_FILE)], work_dir=wd,
                    needs=(*data, *([f'export-{init}'] if pre else [])), resources='train'))
                stages.append(Stage(f'{task}-{init}-seed{seed}-test', [
                    'bash', 'tools/dist_test.sh', cfg, f'{LAST}{wd}', gpus, '--work-dir', str(wd),
                    *opts(task, extra, more)], test_est, budget=budget, configs=[cfg], inputs=[f'{LAST}{wd}'],
                    outputs=[str(wd / TEST_RESULTS_FILE)], needs=(f'{task}-{init}-seed{seed}',), resources='gpu'))
                results.append(str(wd / TEST_RESULTS_FILE))
                tests.append(f'{task}-{init}-seed{seed}-test')
    visuals = visual_stages(args, preset, work, backbones, results, budget, (*data, *exports), tuple(tests))
    stages += visuals
    # only what this run made: `--inits sdae mae` has no random-init row to take deltas against
    stages.append(Stage('report', [PY, 'tools/benchmark_report.py',
                                   *(str(work / f'pretrain_{method}') for method in backbones),
                                   str(work / 'finetune'), *([str(work / 'probes')] if probe else []),
                                   *(['--baseline', 'random'] if 'random' in preset.inits else []),
                                   '--visuals', str(work / 'visuals'),
                                   '--out', str(work / 'report'), *(['--published'] if not preset.demo_data else [])],
                        est['report'], budget=budget,
                        inputs=[*results, *(probe.outputs if probe else []), *(o for s in visuals for o in s.outputs)],
                        outputs=[str(work / 'report' / 'results.json')],
                        # everything: under --slurm it runs once every other job has ended, and shows what failed
                        needs=tuple(s.name for s in stages), after_failures=True))
    check_graph(stages)
    return stages


def probe_stage(args: argparse.Namespace, preset: Preset, work: Path, backbones: dict[str, Path], budget: str,
                data_meta: list[str], needs: tuple[str, ...]) -> Stage | None:
    """Frozen-feature probes (k-NN, linear, linear-seg) of the exported encoders and of random init, for every probe
    seed: `<work>/probes/<init>/<probe>_seed<seed>.json`, features cached in `<work>/probes/.feature_cache`. The
    report ranks the inits on these beside fine-tuning."""
    if not backbones:
        print('[benchmark] no probe stage: random init alone has no pretrained checkpoint to take its architecture '
              'from (tools/probe.py --random builds the one of the first checkpoint)', flush=True)
        return None
    out = work / 'probes'
    if preset.demo_data:
        data = ['--data', str(args.data_root)]
    else:
        # ADE20K's 150 classes: its labels in a capped subset may not reach the largest one.
        data = ['--cls-data', str(args.imagenet / 'train'), '--seg-data', str(args.ade), '--seg-classes', '150',
                *FULL_PROBE_CAPS]
    names = [f'--name={method}={path}' for method, path in backbones.items()]
    random = 'random' in preset.inits
    seeds = [str(s) for s in preset.probe_seeds]
    rows = [*backbones, *([RANDOM_INIT] if random else [])]
    return Stage('probes', [PY, 'tools/probe.py', *names, *(['--random'] if random else []), *data,
                            '--probes', *PROBES, '--seeds', *seeds, *(TINY['probe'] if budget == 'tiny' else ()),
                            '--out', str(out)],
                 preset.est.get('probe', 60), budget=budget, inputs=[*data_meta, *map(str, backbones.values())],
                 outputs=[str(probe_result_path(out, row, p, s)) for row in rows for p in PROBES for s in seeds],
                 needs=needs)


def visual_stages(args: argparse.Namespace, preset: Preset, work: Path, backbones: dict[str, Path],
                  results: list[str], budget: str, encoders: tuple[str, ...], tests: tuple[str, ...]) -> list[Stage]:
    """Pictures for the report: attention / PCA maps of the pretrained encoders (and random init) on validation
    images, and the fine-tuned models' predictions side by side. Each stage's record ends in its visuals.json."""
    out = work / 'visuals'
    est = preset.est.get('visualize', 30)
    stages = []
    if backbones:
        images = args.data_root / 'coco' / 'val' if preset.demo_data else args.coco / 'val2017'
        # Demo encoders pretrain on 64 px (8x8 patches): 128 px shows a 16x16 grid. Real ones: their own size.
        size = ['--size', '128'] if preset.demo_data else []
        stages.append(Stage('visualize-features', [
            PY, 'tools/visualize_features.py', *map(str, backbones.values()),
            *(['random'] if 'random' in preset.inits else []), '--images', str(images), '--num-images', '4', *size,
            '--out', str(out / 'features')], est, budget=budget,
            inputs=[*([str(args.data_root / 'meta.json')] if preset.demo_data else []), *map(str, backbones.values())],
            outputs=[str(out / 'features' / 'visuals.json')], needs=encoders))
    stages.append(Stage('visualize-predictions', [
        # --min-shown 3: a demo-budget detector scores everything low; its 3 best guesses per image still show a lot
        PY, 'tools/visualize_predictions.py', str(work / 'finetune'), '--num-images', '3', '--min-shown', '3',
        '--out', str(out / 'predictions')], est, budget=budget, inputs=results,
        outputs=[str(out / 'predictions' / 'visuals.json')], needs=tests))
    return stages


# The validation annotations the det configs read (val_dataloader.dataset.ann_file): the demo data's, COCO 2017's.
COCO_VAL_ANN = {True: 'annotations/instances_val.json', False: 'annotations/instances_val2017.json'}


def data_root_opts(task: str, root: Path, demo_data: bool) -> list[str]:
    """--cfg-options that point a config at ``root``; mmdet's evaluator reads the annotations by a full path of its
    own, so it is pointed at the same file the validation dataset reads."""
    keys = ['train_dataloader.dataset.data_root', 'val_dataloader.dataset.data_root',
            'test_dataloader.dataset.data_root']
    if task == 'det':
        return [f'{k}={root}/' for k in keys] + [f'{k}={root}/{COCO_VAL_ANN[demo_data]}'
                                                  for k in ('val_evaluator.ann_file', 'test_evaluator.ann_file')]
    return [f'{k}={root}/' for k in keys]


def why_rerun(stage: Stage, marks: Path) -> list[str] | None:
    """None when the stage's record says it finished with this recipe, these inputs and these outputs; else why it
    must run: [] when it never finished, the differences when it finished with something else."""
    done = read_record(marks / f'{stage.name}.done')
    if done is None:
        return []
    recipe = stage.recipe()
    if done.get('key') != recipe_key(recipe):
        return recipe_changes(done.get('recipe') or {}, recipe)
    changes = identity_changes('input', done.get('inputs') or {}, {i: input_identity(i) for i in stage.inputs})
    changes += identity_changes('output', done.get('outputs') or {},
                                {o: file_identity(Path(o)) for o in stage.outputs})
    return changes or None


def why_fresh(stage: Stage, marks: Path, rerun: list[str]) -> list[str]:
    """Why the stage's existing training work dir must not be resumed ([] = resume it): only an interrupted run of
    the very same recipe and inputs may continue from its checkpoints."""
    if rerun:  # it had finished with other settings or inputs
        return rerun
    started = read_record(marks / f'{stage.name}.started')
    if not started:
        return ['no record of what its work dir was started with']
    recipe = stage.recipe()
    if started.get('key') != recipe_key(recipe):
        return recipe_changes(started.get('recipe') or {}, recipe)
    return identity_changes('input', started.get('inputs') or {}, {i: input_identity(i) for i in stage.inputs})


def set_aside(work_dir: Path, work: Path) -> Path:
    """Move a work dir under <work>/superseded/<time>/ (outside what the report reads): nothing is deleted."""
    try:
        rel = work_dir.resolve().relative_to(work.resolve())
    except ValueError:
        rel = Path(work_dir.name)
    stamp = time.strftime('%Y%m%d_%H%M%S')
    dest = work / 'superseded' / stamp / rel
    n = 1
    while dest.exists():  # the same stage set aside twice within a second
        dest = work / 'superseded' / f'{stamp}-{n}' / rel
        n += 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(work_dir, dest)
    return dest


def stage_env(stage: Stage) -> dict[str, str]:
    # PYTHON: the tools/*.sh launchers run their Python tool with it, so every stage runs with the interpreter (and so
    # the environment) of this pipeline, whatever .venv or python3 would have been found.
    return {**os.environ, 'PYTHON': sys.executable, **stage.env}


def run(stages: list[Stage], work: Path) -> int:
    try:
        with work_dir_lock(work) as lock_fd:
            return _run_locked(stages, work, lock_fd)
    except WorkDirLocked as e:
        print(f'[benchmark] {e}', file=sys.stderr)
        return 1


def _plan(stages: list[Stage], marks: Path) -> tuple[dict[str, list[str] | None], set[str]]:
    """Each stage's record check, and the stages expected to run: those whose check fails and those that need one of
    them (checked again when their turn comes, as a rerun may write identical files)."""
    checks = {s.name: why_rerun(s, marks) for s in stages}
    expected: set[str] = set()
    for s in stages:
        if checks[s.name] is not None or any(n in expected for n in s.needs):
            expected.add(s.name)
    return checks, expected


@dataclass
class Ran:
    code: int  # the stage's exit status; EXIT_PREEMPTED when it was preempted, whatever its launcher returned
    seconds: float
    preempted: str = ''  # 'preempted, checkpoint at iteration N' when it was
    error: str = ''  # when it failed: the error its run_status.json records (a rank that stopped answering, ...)


def fresh_status(stage: Stage, started_ns: int) -> dict[str, Any]:
    """The stage's run_status.json if this very run wrote it, else {}."""
    if stage.work_dir is None:
        return {}
    path = stage.work_dir / RUN_STATUS_FILE
    # written by this run, not left by an earlier one (whole seconds: some file systems keep no finer mtime)
    if path.is_file() and path.stat().st_mtime_ns >= started_ns // 10**9 * 10**9:
        return read_record(path) or {}
    return {}


def preemption(stage: Stage, code: int, started_ns: int) -> str:
    """'' unless the stage stopped on preemption: its exit status is EXIT_PREEMPTED, or its run_status.json, written
    by this very run, says 'preempted' (torchrun exits 1 whatever its workers' status). Else what it left behind."""
    status = fresh_status(stage, started_ns)
    if code != EXIT_PREEMPTED and status.get('status') != 'preempted':
        return ''
    if status.get('status') == 'preempted' and status.get('iteration') is not None:
        return f'preempted, checkpoint at iteration {status["iteration"]}'
    return 'preempted'


Launch = Callable[[list[str], dict[str, str]], tuple[list[str], dict[str, str]]]


def execute(stage: Stage, work: Path, rerun: list[str], pass_fds: tuple[int, ...] = (),
            launch: Launch | None = None) -> Ran:
    """Run one stage whose record does not hold: set its stale work dir aside, record what it starts with, run its
    command (through `launch(cmd, env)`, e.g. as a Slurm job step), record what it made when it succeeds."""
    marks = work / 'stages'
    if rerun:
        print(f'[benchmark] {stage.name} had finished; it runs again: {"; ".join(rerun)}', flush=True)
    if stage.work_dir is not None and stage.work_dir.exists():
        fresh = why_fresh(stage, marks, rerun)
        if fresh:
            dest = set_aside(stage.work_dir, work)
            why = '' if fresh is rerun else f'{"; ".join(fresh)}: '  # the reasons were just printed
            print(f'[benchmark] {stage.name}: {why}moved its work dir {stage.work_dir} aside to {dest}; the stage '
                  f'starts from scratch instead of resuming those checkpoints', flush=True)
    cmd = [resolve(a) for a in stage.cmd]
    recipe = stage.recipe()
    record: dict[str, Any] = {'key': recipe_key(recipe), 'recipe': recipe, 'cmd': cmd,
                              'inputs': {i: input_identity(i) for i in stage.inputs}, 'pid': os.getpid(),
                              'started': time.strftime('%Y-%m-%d %H:%M:%S')}
    if 'SLURM_JOB_ID' in os.environ:
        record['slurm_job'] = os.environ['SLURM_JOB_ID']
    (marks / f'{stage.name}.done').unlink(missing_ok=True)  # it no longer describes what is on disk
    write_record(marks / f'{stage.name}.started', record)
    print('[benchmark] $ ' + shlex.join(cmd), flush=True)
    run_cmd, env = launch(cmd, stage_env(stage)) if launch else (cmd, stage_env(stage))
    t0 = time.time()
    started_ns = time.time_ns()
    proc = subprocess.run(run_cmd, cwd=ROOT, env=env, pass_fds=pass_fds)
    took = time.time() - t0
    preempted = preemption(stage, proc.returncode, started_ns)
    if preempted:
        return Ran(EXIT_PREEMPTED, took, preempted)
    if proc.returncode == 0:
        write_record(marks / f'{stage.name}.done', {**record, 'seconds': round(took, 1),
                                                     'outputs': {o: file_identity(Path(o)) for o in stage.outputs}})
        return Ran(0, took)
    return Ran(proc.returncode, took, error=fresh_status(stage, started_ns).get('error') or '')


def _run_locked(stages: list[Stage], work: Path, lock_fd: int) -> int:
    marks = work / 'stages'
    marks.mkdir(parents=True, exist_ok=True)
    checks, expected = _plan(stages, marks)
    done = len(stages) - len(expected)
    if done:
        print(f'[benchmark] {done}/{len(stages)} stages already finished (records in {marks}); continuing')
    changed = [f'{name} ({"; ".join(why)})' for name, why in checks.items() if why]
    if changed:
        print(f'[benchmark] {len(changed)} finished stage(s) were computed with something else and run again: '
              + ', '.join(changed), flush=True)
    ratio_num, ratio_den = 0.0, 0.0  # actual / estimated time of the stages run now, to correct the ETA
    t_start = time.time()
    for i, stage in enumerate(stages):
        rerun = why_rerun(stage, marks)  # again: the stages before it may have rewritten its inputs
        if rerun is None:
            if stage.name in expected:
                print(f'[benchmark] stage {i + 1}/{len(stages)}: {stage.name}: its inputs are unchanged after all; '
                      f'reused', flush=True)
            continue
        scale = min(max(ratio_num / ratio_den, 0.5), 2.0) if ratio_den else 1.0  # one odd stage must not swing the ETA
        eta = sum(s.est_s for s in stages[i:] if s.name in expected or s is stage) * scale
        print(f'\n[benchmark] stage {i + 1}/{len(stages)}: {stage.name} (expected {fmt(stage.est_s * scale)}, '
              f'pipeline ETA {fmt(eta)}, elapsed {fmt(time.time() - t_start)})', flush=True)
        # The lock's descriptor goes to the stage: if this process is killed, a stage it leaves running still keeps
        # a second pipeline out of the work dir.
        ran = execute(stage, work, rerun, pass_fds=(lock_fd,))
        if ran.preempted:
            # Not a failure: the run saved its state on purpose (time limit, preemption) and a rerun continues it.
            print(f'[benchmark] stage {stage.name} interrupted ({ran.preempted}) after {fmt(ran.seconds)}: rerun '
                  f'the same command to resume it. Finished stages are kept.', flush=True)
            return EXIT_PREEMPTED
        if ran.code != 0:
            print(f'[benchmark] stage {stage.name} FAILED (exit code {ran.code}) after {fmt(ran.seconds)}. '
                  + (f'Its run recorded: {ran.error} ' if ran.error else '')
                  + 'Fix the cause shown above and rerun the same command: finished stages are kept, this one '
                  'resumes from its last checkpoint.', file=sys.stderr)
            return ran.code
        ratio_num += ran.seconds
        ratio_den += stage.est_s
    print(f'\n[benchmark] all {len(stages)} stages finished ({fmt(time.time() - t_start)} this run). '
          f'Report: {work / "report" / "report.html"}')
    return 0


def run_slurm_job(work: Path, name: str) -> int:
    """The body of one Slurm job: the stage as submitted (<work>/slurm/stages/<name>.json), with the records of the
    local pipeline; exit status EXIT_PREEMPTED when it was preempted (the job script then requeues the job). No work
    dir lock: the stages of one work dir run in parallel jobs, and jobs.json gives each stage one job at a time."""
    path = slurm.stage_file(work, name)
    data = read_record(path)
    if not data:
        print(f'[benchmark] {path}: missing or unreadable; this job was not submitted by tools/run_benchmark.py '
              f'--slurm for {work}: rerun that command to submit it again', file=sys.stderr)
        return 2
    stage = Stage.from_json(data)
    marks = work / 'stages'
    marks.mkdir(parents=True, exist_ok=True)
    missing = slurm.unfinished_needs(stage, marks)
    if missing:  # only a stage that runs after failures gets here with a need unfinished
        print(f'[benchmark] {name} runs without {len(missing)} stage(s) that did not finish (failed or cancelled; '
              f'shown as such or absent): {", ".join(missing)}', flush=True)
    rerun = why_rerun(stage, marks)
    if rerun is None:
        print(f'[benchmark] {name}: its record holds (finished with these settings and inputs); nothing to run')
        return 0
    ran = execute(stage, work, rerun, launch=slurm.step_command)
    if ran.preempted:
        print(f'[benchmark] {name} interrupted ({ran.preempted}) after {fmt(ran.seconds)}: the job requeues itself '
              f'and resumes', flush=True)
    elif ran.code != 0:
        print(f'[benchmark] stage {name} FAILED (exit code {ran.code}) after {fmt(ran.seconds)}. '
              + (f'Its run recorded: {ran.error} ' if ran.error else '')
              + 'Fix the cause shown above and rerun the --slurm command: it submits this stage again (it resumes '
              'from its last checkpoint) and the stages that need it.', file=sys.stderr)
    return ran.code


def submit_slurm(args: argparse.Namespace, stages: list[Stage], work: Path) -> int:
    opts = slurm.SlurmOptions(partition=args.slurm, gpus=args.gpus, nodes_per_job=args.nodes_per_job, time=args.time,
                              account=args.account, qos=args.qos, sbatch_args=tuple(args.sbatch_arg))
    checks, expected = _plan(stages, work / 'stages')
    if args.dry_run:
        return slurm.submit(stages, work, opts, checks, expected, ROOT, dry_run=True)
    try:  # one submission at a time, and none while a local pipeline runs here
        with work_dir_lock(work):
            return slurm.submit(stages, work, opts, checks, expected, ROOT)
    except WorkDirLocked as e:
        print(f'[benchmark] {e}', file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='demo')
    parser.add_argument('--work-dir', type=Path, help='default: work_dirs/<preset>')
    parser.add_argument('--gpus', type=int, default=1, help='processes per stage (GPUs; CPU processes without GPUs); '
                        'with --slurm: GPUs per node')
    parser.add_argument('--data-root', type=Path, default=ROOT / 'data' / 'demo', help='embedded data (demo presets)')
    parser.add_argument('--imagenet', type=Path, help='full preset: ImageNet root holding train/<class>/ and '
                        'val/<class>/ (pretraining and the probes read train/; fine-tuning and linear probing both)')
    parser.add_argument('--coco', type=Path, help='full preset: COCO root (train2017/, val2017/, annotations/)')
    parser.add_argument('--ade', type=Path, help='full preset: ADEChallengeData2016 root')
    parser.add_argument('--inits', nargs='+', choices=['sdae', 'mae', 'random'], help='default: all three')
    parser.add_argument('--seeds', nargs='+', type=int, help="fine-tuning seeds (default: the preset's)")
    parser.add_argument('--probe-seeds', nargs='+', type=int, help="frozen-feature probe seeds (default: the preset's)")
    parser.add_argument('--dry-run', action='store_true',
                        help='print the stages (finished, changed or to run) and exit; with --slurm: the job graph '
                             'and the critical path, nothing submitted')
    group = parser.add_argument_group('Slurm', 'one sbatch job per stage still to run, chained by job dependencies; '
                                      'rerun the same command to see what remains and resubmit what failed')
    group.add_argument('--slurm', metavar='PARTITION', help='submit the stages to this partition instead of running '
                       'them here')
    group.add_argument('--nodes-per-job', type=int, default=1, help='nodes of each training job (default 1)')
    group.add_argument('--time', help="time limit of each job (sbatch --time, e.g. 24:00:00); a training job near it "
                       "saves a checkpoint and requeues itself")
    group.add_argument('--account', help='sbatch --account')
    group.add_argument('--qos', help='sbatch --qos')
    group.add_argument('--sbatch-arg', action='append', default=[], metavar='ARG',
                       help='one more sbatch option for every job, e.g. --sbatch-arg=--cpus-per-task=10 (repeatable)')
    group.add_argument('--slurm-job', metavar='STAGE', help=argparse.SUPPRESS)  # the body of a submitted job
    args = parser.parse_args(argv)
    if args.slurm_job:
        if args.work_dir is None:
            parser.error('--slurm-job needs --work-dir')
        return run_slurm_job(args.work_dir, args.slurm_job)
    if args.nodes_per_job < 1:
        parser.error(f'--nodes-per-job must be at least 1 (got {args.nodes_per_job})')
    preset = replace(PRESETS[args.preset], inits=tuple(args.inits or PRESETS[args.preset].inits),
                     seeds=tuple(args.seeds or PRESETS[args.preset].seeds),
                     probe_seeds=tuple(args.probe_seeds or PRESETS[args.preset].probe_seeds))
    if not preset.demo_data:
        missing = [n for n in ('imagenet', 'coco', 'ade') if getattr(args, n) is None]
        if missing:
            parser.error(f'--preset {args.preset} needs ' + ' '.join(f'--{n} PATH' for n in missing))
    work = args.work_dir or ROOT / 'work_dirs' / args.preset
    stages = build_stages(args, preset, work)
    if args.slurm:
        return submit_slurm(args, stages, work)
    if args.dry_run:
        checks, expected = _plan(stages, work / 'stages')
        for s in stages:
            state = 'finished' if s.name not in expected else 'changed' if checks[s.name] else 'to run'
            print(f'{s.name:<24} {state:<8} ~{fmt(s.est_s):>7}  {shlex.join(s.cmd)}')
            if checks[s.name]:
                print(f'{"":<24} ({"; ".join(checks[s.name])})')
        todo = [s for s in stages if s.name in expected]
        path_s, _ = critical_path(todo)
        print(f'{len(todo)} stage(s) to run: ~{fmt(sum(s.est_s for s in todo))} one after another here; '
              f'~{fmt(path_s)} on the critical path with --slurm (every stage starting when its needs end)')
        return 0
    return run(stages, work)


if __name__ == '__main__':
    sys.exit(main())
