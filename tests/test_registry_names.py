"""Every name the suite registers in mmdet's / mmseg's registries is unique: not already taken in the installed
registries (mmengine, mmcv, mmdet, mmseg with all their modules registered) and not one that OpenMMLab's own projects/
register (tests/openmmlab_project_registry_names.json, e.g. mmdet's projects.ViTDet registers 'LN2d'), so that
those projects import next to ours without ``KeyError: '... is already registered'``.

The registries are snapshotted in a fresh interpreter before and after ``import backbones``: what is new or replaced
is ours (``force=True`` would otherwise hide a clash with an installed name)."""
from __future__ import annotations

import json
import os
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
import mmdet.registry as D, mmseg.registry as S, mmengine.registry as E
regs = {f'{pkg}.{n}': getattr(mod, n) for pkg, mod in (('mmengine', E), ('mmdet', D), ('mmseg', S)) for n in dir(mod)
        if type(getattr(mod, n)).__name__ == 'Registry'}
def snap():
    return {k: {name: id(obj) for name, obj in r.module_dict.items()} for k, r in regs.items()}
before = snap()
import backbones  # noqa
after = snap()
ours = {k: sorted(n for n, i in after[k].items() if before[k].get(n) != i) for k in regs}
replaced = {k: sorted(n for n in ours[k] if n in before[k]) for k in regs}
installed = {k: sorted(before[k]) for k in regs}
# the same name in ANY installed registry (parent scopes included) for another object: a shadowing clash
foreign = sorted({f'{k}: {n}' for k in ours for n in ours[k] for k2 in regs
                  if n in before[k2] and before[k2][n] != after[k][n]})
json.dump({'ours': {k: v for k, v in ours.items() if v}, 'replaced': {k: v for k, v in replaced.items() if v},
           'foreign': foreign, 'installed': installed}, sys.stdout)
'''


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
    out = subprocess.run([sys.executable, '-c', _SNAPSHOT], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_what_we_register_is_found(registries):
    ours = registries['ours']
    assert {'SdAEViT', 'SimpleFeaturePyramid', 'SdAELN2d', 'Feature2Pyramid'} <= set(ours['mmdet.MODELS'])
    assert {'SdAEViT', 'SimpleFeaturePyramid', 'SdAELN2d'} <= set(ours['mmseg.MODELS'])
    assert ours['mmdet.OPTIM_WRAPPER_CONSTRUCTORS'] == ours['mmseg.OPTIM_WRAPPER_CONSTRUCTORS'] == [
        'LayerDecayConstructor']
    assert ours['mmdet.HOOKS'] == ours['mmseg.HOOKS'] == ['SdAERecipeBatchHook']


# Deliberate replacements (backbones/run_safety.py): every config that names mmengine's CheckpointHook or OptimWrapper
# -- ours, mmdet's and mmseg's default runtimes, a user's -- gets crash-safe rotation and the non-finite gradient guard.
# Each replacement is a subclass of the class it replaces, so every option configured for the original still works.
DELIBERATE = {'CheckpointHook': ('mmengine.hooks', 'CrashSafeCheckpointHook'),
              'OptimWrapper': ('mmengine.optim', 'FiniteGradOptimWrapper')}


def test_no_installed_name_is_replaced_or_shadowed(registries):
    replaced = {k: [n for n in v if n not in DELIBERATE] for k, v in registries['replaced'].items()}
    assert {k: v for k, v in replaced.items() if v} == {}, \
        'we re-register (force=True) names the installed toolboxes own'
    # Feature2Pyramid is mmseg's own class, registered in mmdet too: the same object, so not a clash
    foreign = [f for f in registries['foreign'] if f.rsplit(': ', 1)[1] not in DELIBERATE]
    assert foreign == [], 'a name of ours is taken by another class in an installed registry'


def test_deliberate_replacements_extend_the_classes_they_replace():
    import importlib

    from mmengine.registry import HOOKS, OPTIM_WRAPPERS

    import backbones  # noqa: F401
    from backbones import run_safety

    for name, (module, ours) in DELIBERATE.items():
        registry = HOOKS if name == 'CheckpointHook' else OPTIM_WRAPPERS
        original = getattr(importlib.import_module(module), name)
        replacement = registry.get(name)
        assert replacement is getattr(run_safety, ours) and issubclass(replacement, original) \
            and replacement is not original


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
