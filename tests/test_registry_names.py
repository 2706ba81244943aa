"""Every name the suite registers in mmdet's / mmseg's registries is unique: not already taken in the installed
registries (mmengine, mmcv, mmdet, mmseg with all their modules registered) and not one that OpenMMLab's own projects/
register (tests/openmmlab_project_registry_names.json, e.g. mmdet's projects.ViTDet registers 'LN2d'), so that
those projects import next to ours without ``KeyError: '... is already registered'``.

The registries (and the rest of what an import could take over) are snapshotted in a fresh interpreter before and after
importing the library: what is new or replaced is ours, and nothing may be replaced."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = ROOT / 'tests' / 'openmmlab_project_registry_names.json'

_SNAPSHOT = r'''
import json, sys
from mmdet.utils import register_all_modules as det_all
from mmseg.utils import register_all_modules as seg_all
det_all(init_default_scope=False)
seg_all(init_default_scope=False)
import torch
import mmdet.registry as D, mmseg.registry as S, mmengine.registry as E
from mmengine.fileio import io as fileio
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import CheckpointLoader
regs = {f'{pkg}.{n}': getattr(mod, n) for pkg, mod in (('mmengine', E), ('mmdet', D), ('mmseg', S)) for n in dir(mod)
        if type(getattr(mod, n)).__name__ == 'Registry'}
def snap():
    return {k: {name: id(obj) for name, obj in r.module_dict.items()} for k, r in regs.items()}
def world():
    # everything else an import could take over: checkpoint schemes, file backends, pickling, torch's allow-list
    return {'schemes': {p: id(f) for p, f in CheckpointLoader._schemes.items()},
            'backends': {n: id(b) for n, b in fileio.backends.items()},
            'prefix_backends': {n: id(b) for n, b in fileio.prefix_to_backends.items()},
            'reduce': id(HistoryBuffer.__dict__.get('__reduce__')),
            'safe_globals': sorted(map(str, torch.serialization.get_safe_globals()))}
before, world_before = snap(), world()
for name in sys.argv[1:]:
    __import__(name)
after, world_after = snap(), world()
ours = {k: sorted(n for n, i in after[k].items() if before[k].get(n) != i) for k in regs}
replaced = {k: sorted(n for n in ours[k] if n in before[k]) for k in regs}
installed = {k: sorted(before[k]) for k in regs}
# the same name in ANY installed registry (parent scopes included) for another object: a shadowing clash
foreign = sorted({f'{k}: {n}' for k in ours for n in ours[k] for k2 in regs
                  if n in before[k2] and before[k2][n] != after[k][n]})
changed = {k: [x for x in sorted(set(world_before[k]) | set(world_after[k]) if isinstance(world_before[k], dict)
                                 else []) if world_before[k].get(x) != world_after[k].get(x)]
           if isinstance(world_before[k], dict) else world_before[k] != world_after[k] for k in world_before}
json.dump({'ours': {k: v for k, v in ours.items() if v}, 'replaced': {k: v for k, v in replaced.items() if v},
           'foreign': foreign, 'installed': installed, 'changed': changed}, sys.stdout)
'''
# Every library package of the suite (the commands are entry points: see test_commands_install_safe_loading).
LIBRARY = ['sdae_suite', 'sdae_suite.contracts', 'sdae_suite.engine', 'sdae_suite.backbones', 'sdae_suite.pretrain',
           'sdae_suite.probes', 'sdae_suite.probes.suite', 'sdae_suite.report.compare', 'sdae_suite.report.render',
           'sdae_suite.pipeline.state', 'sdae_suite.preflight.dataset', 'sdae_suite.preflight.checkpoints',
           'sdae_suite.visualize.features', 'sdae_suite.visualize.predictions', 'sdae_suite.benchmarks.speed',
           'sdae_suite.benchmarks.gpu_check', 'sdae_suite.demodata.scenes', 'sdae_suite.classification']


def snapshot(*modules: str) -> dict:
    out = subprocess.run([sys.executable, '-c', _SNAPSHOT, *modules], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def project_names(path: Path = PROJECTS) -> dict[str, set[str]]:
    """registry ('mmdet.MODELS') -> names registered there by the listed projects."""
    out: dict[str, set[str]] = {}
    for project in json.loads(path.read_text())['projects']:
        for registry, names in project['registered'].items():
            out.setdefault(registry, set()).update(names)
    return out


def clashes(ours: dict[str, list[str]], taken: dict[str, set[str]]) -> list[str]:
    """'registry: name' for each of our names that another party registers too. A name is compared across all
    registries of the same toolbox and kind-insensitively (a project's 'LN2d' in MODELS clashes with ours in MODELS;
    the same name in another registry kind is reported as well, to keep names unambiguous in configs)."""
    every = set().union(*taken.values()) if taken else set()
    return sorted(f'{reg}: {name}' for reg, names in ours.items() for name in names if name in every)


@pytest.fixture(scope='module')
def registries() -> dict:
    return snapshot(*LIBRARY)


def test_what_we_register_is_found(registries):
    ours = registries['ours']
    assert {'SdAEViT', 'SimpleFeaturePyramid', 'SdAELN2d'} <= set(ours['mmdet.MODELS'])
    assert {'SdAEViT', 'SimpleFeaturePyramid', 'SdAELN2d'} <= set(ours['mmseg.MODELS'])
    # the run infrastructure lives in mmengine's root registries, where mmdet's and mmseg's children (and the
    # classification configs, default_scope 'mmengine') find it
    assert 'LayerDecayConstructor' in ours['mmengine.OPTIM_WRAPPER_CONSTRUCTORS']
    assert 'mmdet.OPTIM_WRAPPER_CONSTRUCTORS' not in ours and 'mmseg.OPTIM_WRAPPER_CONSTRUCTORS' not in ours
    assert {'CrashSafeCheckpointHook', 'RNGStateHook', 'SdAERecipeBatchHook', 'EMATeacherHook',
            'SkippedImagesHook'} <= set(ours['mmengine.HOOKS'])
    assert ours['mmengine.OPTIM_WRAPPERS'] == ['FiniteGradOptimWrapper']
    assert 'LinearWarmupFromZeroLR' in ours['mmengine.PARAM_SCHEDULERS']
    # ImageNet classification: model, dataset, metric and MAE's LARS, all under names of our own
    assert 'SdAEImageClassifier' in ours['mmengine.MODELS']
    assert 'SdAEImageFolder' in ours['mmengine.DATASETS']
    assert 'SdAETopKAccuracy' in ours['mmengine.METRICS']
    assert 'MAELARS' in ours['mmengine.OPTIMIZERS']


def test_importing_the_library_takes_over_nothing(registries):
    """No installed name is replaced or shadowed, and nothing else of torch or mmengine changes: no checkpoint scheme,
    no file backend, not HistoryBuffer's pickling, not torch's allow-list."""
    assert registries['replaced'] == {}, 'we re-register names the installed toolboxes own'
    assert registries['foreign'] == [], 'a name of ours is taken by another class in an installed registry'
    changed = registries['changed']
    assert changed['schemes'] == [] and changed['reduce'] is False and changed['safe_globals'] is False
    assert changed['prefix_backends'] == [] and changed['backends'] == ['sdae_atomic_local']  # a new name, ours


def test_commands_install_safe_loading_and_only_that():
    """The entry points make the one documented global change (sdae_suite.engine.checkpoint_io): every mmengine
    checkpoint scheme now loads through the gate, HistoryBuffer pickles without getattr. Registries: ours only."""
    got = snapshot('sdae_suite.commands')
    assert got['replaced'] == {} and got['foreign'] == []
    assert set(got['changed']['schemes']) >= {'', 'http://', 'https://', 'open-mmlab://', r'(\S+\:)?s3://'}
    assert got['changed']['reduce'] is True and got['changed']['safe_globals'] is False
    proc = subprocess.run([sys.executable, '-c', 'import sdae_suite.commands; from sdae_suite.engine import '
                           'checkpoint_io as c; import sys; sys.exit(0 if c.is_installed() else 1)'],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_no_force_registration_anywhere():
    """The names we would register with force=True under a name mmengine, mmdet or mmseg already use: none. (A static
    scan, so it also covers code paths an import does not run.)"""
    import ast

    forced = []
    for path in [*ROOT.glob('sdae_suite/**/*.py'), *ROOT.glob('backbones/*.py'), *ROOT.glob('pretrain/*.py')]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, 'attr', '') in ('register_module', 'register_backend',
                                                                                   'register_scheme'):
                if any(k.arg == 'force' and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                       for k in node.keywords):
                    forced.append(f'{path.relative_to(ROOT)}:{node.lineno}')
    # the one documented exception: install_safe_checkpoint_io routes mmengine's schemes through the gate
    assert forced == [f'sdae_suite/engine/checkpoint_io.py:{n}' for n in _install_lines()]


def _install_lines() -> list[int]:
    import ast

    path = ROOT / 'sdae_suite/engine/checkpoint_io.py'
    fn = next(n for n in ast.walk(ast.parse(path.read_text()))
              if isinstance(n, ast.FunctionDef) and n.name == 'install_safe_checkpoint_io')
    return sorted(n.lineno for n in ast.walk(fn) if isinstance(n, ast.Call)
                  and getattr(n.func, 'attr', '') == 'register_scheme')


def test_no_name_taken_by_openmmlab_projects(registries):
    taken = project_names()
    assert 'LN2d' in taken['mmdet.MODELS']  # the data file holds mmdet's projects.ViTDet names
    assert clashes(registries['ours'], taken) == []


def test_the_check_fails_on_a_clash_such_as_ln2d(registries):
    # the registration before the fix: 'LN2d' in mmdet's MODELS, which projects.ViTDet registers too
    before_fix = {'mmdet.MODELS': [*registries['ours']['mmdet.MODELS'], 'LN2d']}
    assert clashes(before_fix, project_names()) == ['mmdet.MODELS: LN2d']
    # ... and a name the installed toolboxes own is caught by the installed half
    installed = {k: set(v) for k, v in registries['installed'].items()}
    assert clashes({'mmdet.MODELS': ['FPN']}, installed) == ['mmdet.MODELS: FPN']
