"""The house: one import namespace whose dependency arrows point one way, every import resolvable from the installed
package, and configs that choose the suite's run-safety components by their own names.

The import graph is read statically (every ``import`` statement, at module level or inside a function: a late import
hides a cycle from Python, not from this test)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where each part of the namespace lives (pyproject.toml's package-dir).
PACKAGE_DIRS = {'sdae_suite': ROOT / 'sdae_suite', 'sdae_suite.backbones': ROOT / 'backbones',
                'sdae_suite.pretrain': ROOT / 'pretrain'}
# Lower layers first; a module may import its own layer or lower ones only (sdae_suite/__init__.py says the same).
LAYERS = [
    {'sdae_suite', 'sdae_suite.contracts'},
    {'sdae_suite.engine'},
    {'sdae_suite.backbones', 'sdae_suite.preflight'},
    {'sdae_suite.probes', 'sdae_suite.classification'},
    {'sdae_suite.pretrain', 'sdae_suite.demodata', 'sdae_suite.visualize'},
    {'sdae_suite.benchmarks'},
    {'sdae_suite.report', 'sdae_suite.pipeline'},
    {'sdae_suite.commands'},
]


def modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGE_DIRS.items():
        for f in folder.rglob('*.py'):
            parts = [p for p in f.relative_to(folder).with_suffix('').parts if p != '__init__']
            if 'configs' in parts or (pkg == 'sdae_suite' and parts and parts[0] in ('backbones', 'pretrain')):
                continue  # mmengine configs are read by mmengine, not imported
            out['.'.join([pkg, *parts])] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the suite's modules it imports (``from pkg import module`` counts as the module)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:
                    up = package.split('.')[:len(package.split('.')) - (node.level - 1)]
                    base = '.'.join(up + ([node.module] if node.module else []))
                targets = [base] + [f'{base}.{a.name}' for a in node.names if f'{base}.{a.name}' in mods]
            for t in targets:
                while t not in mods and '.' in t:
                    t = t.rsplit('.', 1)[0]
                if t in mods and t != name and t.startswith('sdae_suite'):
                    graph[name].add(t)
    return graph


def layer_of(module: str) -> int:
    part = '.'.join(module.split('.')[:2])
    return next(i for i, layer in enumerate(LAYERS) if part in layer or module in layer)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_belongs_to_a_layer():
    assert [m for m in modules() if not any('.'.join(m.split('.')[:2]) in L or m in L for L in LAYERS)] == []


def test_no_import_from_a_lower_layer_to_a_higher_one():
    graph = import_graph()
    upward = sorted(f'{a} -> {b}' for a, bs in graph.items() for b in bs if layer_of(b) > layer_of(a))
    assert upward == []


def test_no_import_cycle_hidden_or_not():
    graph = import_graph()
    assert sum(map(len, graph.values())) > 100  # the walk sees the real graph
    assert cycles(graph) == []


def test_the_cycle_check_catches_a_late_import():
    # the circle this layout removed: pretrain -> probe hook -> probes.suite -> probes.data -> (late) pretrain.data
    graph = {'p.init': {'p.hook'}, 'p.hook': {'q.suite'}, 'q.suite': {'q.data'}, 'q.data': {'p.data'},
             'p.data': set()}
    assert cycles(graph) == []
    graph['p.data'] = {'p.init'}
    assert cycles(graph) == [['p.data', 'p.hook', 'p.init', 'q.data', 'q.suite']]


def test_fine_tuning_does_not_load_the_pretraining_package():
    proc = subprocess.run([sys.executable, '-c', 'import sys, sdae_suite.commands.train, sdae_suite.commands.test; '
                           'print(sorted(m for m in sys.modules if m.startswith(("sdae_suite.pretrain", '
                           '"sdae_suite.probes"))))'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == '[]'


def test_no_sys_path_edits_in_the_suite():
    offenders = []
    for path in [*ROOT.glob('sdae_suite/**/*.py'), *ROOT.glob('backbones/*.py'), *ROOT.glob('pretrain/*.py'),
                 *ROOT.glob('tools/*.py')]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == 'path' and getattr(node.value, 'id', '') == 'sys':
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_tools_are_thin_entry_points():
    """Each tools/*.py runs one command of the package; the code lives in sdae_suite/commands."""
    for path in ROOT.glob('tools/*.py'):
        tree = ast.parse(path.read_text())
        imports = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
        assert [i.module for i in imports] == [f'sdae_suite.commands.{path.stem}'], path.name
        assert len(path.read_text().splitlines()) <= 14, path.name


def test_the_package_imports_from_outside_the_repository(tmp_path):
    proc = subprocess.run([sys.executable, '-c', 'import sdae_suite.backbones, sdae_suite.pretrain, '
                           'sdae_suite.report.compare as c; print(sdae_suite.backbones.__file__); print(c.__file__)'],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    backbones, report = proc.stdout.split()
    assert Path(backbones) == ROOT / 'backbones' / '__init__.py'
    assert Path(report) == ROOT / 'sdae_suite' / 'report' / 'compare.py'


def test_pip_wheel_builds_the_package(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
                           str(tmp_path / 'dist'), str(ROOT)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    import zipfile

    wheel = next((tmp_path / 'dist').glob('sdae_suite-*.whl'))
    names = set(zipfile.ZipFile(wheel).namelist())
    # every module of the namespace is in it (a sub-package missing from pyproject.toml's list would not be)
    expected = {'/'.join(m.split('.')) + ('/__init__.py' if f.name == '__init__.py' else '.py')
                for m, f in modules().items()}
    assert expected - names == set()
    assert not any(n.startswith(('tests/', 'tools/', 'backbones/', 'pretrain/')) for n in names)


CONFIGS = sorted([*ROOT.glob('det_configs/*.py'), *ROOT.glob('seg_configs/*.py'), *ROOT.glob('cls_configs/*.py'),
                  *ROOT.glob('pretrain/configs/*.py')])


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_chooses_the_crash_safe_components(config):
    """With nothing replaced on import, crash-safe rotation and the non-finite gradient guard hold because each of our
    configs names them (tools/train.py keeps the guard when it turns AMP off on a CPU-only machine)."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(config))
    assert cfg.default_hooks.checkpoint.type == 'CrashSafeCheckpointHook'
    # fp16 AMP keeps GradScaler's own handling of inf gradients (it skips those steps by design)
    assert cfg.optim_wrapper.type in ('FiniteGradOptimWrapper', 'AmpOptimWrapper')
    # our classes and the safe-loading installation, for a Runner built from the config by any launcher
    ours = 'sdae_suite.pretrain' if 'pretrain' in config.parts else 'sdae_suite.backbones'
    assert {ours, 'sdae_suite.engine', 'sdae_suite.engine.safe_io_setup'} <= set(cfg.custom_imports.imports)


def test_a_tool_without_the_install_says_what_to_do(tmp_path):
    """No sys.path edits: a Python without the suite installed (here: with site-packages off) gets one line naming the
    fix, not a traceback."""
    proc = subprocess.run([sys.executable, '-S', str(ROOT / 'tools' / 'train.py'), '--help'], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip() == f'{ROOT / "tools" / "train.py"}: sdae_suite is not installed for this Python; run ' \
                                  f'`make install` (tools/install.sh)'
