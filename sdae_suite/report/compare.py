"""Rows (one per pretrained checkpoint) and cells (one per task) of the benchmark report, built from the runs that
`sdae_suite.report.runs` reads: means over seeds, deltas to a baseline, recipe checks. `generate` is the whole report,
as `tools/benchmark_report.py` runs it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sdae_suite.contracts import RANDOM_INIT
from sdae_suite.report.model import Cell, Report, Row
from sdae_suite.report.probes import find_probe_results
from sdae_suite.report.published import PUBLISHED
from sdae_suite.report.runs import CLS_DATA, CLS_TASKS, METRICS, STATES, TASKS, Run, cls_data, find_run_dirs, read_run
from sdae_suite.report.verdict import report_verdict
from sdae_suite.report.visuals import find_visuals

# Settings expected to differ between runs of one comparison (paths, seeds), not recipe differences.
IGNORED_CONFIG_KEYS = ('work_dir', 'load_from', 'resume', 'launcher', 'randomness.seed', 'model.backbone.init_cfg',
                       'model.backbone.pretrained', 'model.backbone.checkpoint', 'visualizer', 'default_hooks',
                       'log_processor', 'env_cfg')

class ReportError(Exception):
    """A problem with the arguments or the inputs as a whole: one message, exit code `code`."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _ckpt_key(path: str | None) -> str | None:
    if path is None:
        return None
    p = Path(path)
    return os.path.realpath(p) if p.exists() else os.path.normpath(path)


def _auto_name(run: Run) -> str:
    if run.pretrained is None:
        return RANDOM_INIT
    m = run.pretrained_meta or {}
    if m.get('method'):
        parts = [str(m['method'])]
        if m.get('epoch') is not None:
            parts.append(f'{m["epoch"]}ep')
        if m.get('branch'):
            parts.append(str(m['branch']))
        return ' '.join(parts)
    return Path(run.pretrained).stem


def collect(inputs: list[tuple[str | None, str]], stale_after_s: float) -> tuple[list[Run], list[str]]:
    """Runs under each (name, path) input, each run once (a --name wins over a plain path)."""
    runs: dict[str, Run] = {}
    warnings = []
    for name, raw in inputs:
        root = Path(raw)
        if not root.exists():
            warnings.append(f'{raw}: does not exist (typo, or the run was never started?)')
            runs.setdefault(f'missing:{raw}', Run(path=root, state='missing', label=name))
            continue
        dirs = find_run_dirs(root)
        if not dirs:
            warnings.append(f'{raw}: no run dir found (no run_status.json, test_results.json or mmengine log)')
            runs.setdefault(f'missing:{raw}', Run(path=root, state='missing', label=name))
        for d in dirs:
            key = os.path.realpath(d)
            if key not in runs:
                try:
                    runs[key] = read_run(d, stale_after_s)
                except Exception as e:  # noqa: BLE001  (a run we cannot parse must not cost the whole report)
                    runs[key] = Run(path=d, state='corrupt', notes=[f'{d}: unreadable ({e.__class__.__name__}: {e})'])
            if name:
                runs[key].label = name
    return list(runs.values()), warnings


def build_rows(runs: list[Run]) -> list[Row]:
    """One measured row per checkpoint, in order of first appearance. A --name labels its runs' checkpoint."""
    rows: dict[Any, Row] = {}
    for run in runs:
        if run.state == 'missing':
            key = ('missing', run.label or str(run.path))
            if run.label and not any(r.name == run.label for r in rows.values()):
                rows.setdefault(key, Row(name=run.label, source='measured', note=f'{run.path}: missing'))
            continue
        if run.kind not in TASKS:
            continue  # pretraining runs are attached to the rows of the checkpoints exported from them, below
        key = ('ckpt', _ckpt_key(run.pretrained))
        row = rows.get(key)
        if row is None:
            row = rows[key] = Row(name='', source='measured', pretrained=run.pretrained, meta=run.pretrained_meta)
        if run.label and not row.name:
            row.name = run.label
        elif run.label and row.name != run.label:
            run.notes.append(f'{run.path}: --name {run.label!r} ignored, its checkpoint row is named {row.name!r}')
        row.meta = row.meta or run.pretrained_meta
        row.cells.setdefault(run.kind, Cell(state='')).runs.append(run)
    used: dict[str, int] = {}
    for row in rows.values():
        if not row.name:
            first = next(r for c in row.cells.values() for r in c.runs)
            row.name = _auto_name(first)
    for row in rows.values():
        used[row.name] = used.get(row.name, 0) + 1
    for row in rows.values():  # two checkpoints with the same provenance: tell them apart by their file
        if used[row.name] > 1 and row.pretrained:
            row.name = f'{row.name} [{Path(row.pretrained).parent.name}/{Path(row.pretrained).name}]'
    _attach_pretraining(list(rows.values()), runs)
    return list(rows.values())


def _attach_pretraining(rows: list[Row], runs: list[Run]) -> None:
    """Link each checkpoint row to the pretraining run it was exported from: the run dir holding the checkpoint file,
    else the one run whose config is the backbone meta's pretraining config. One pretraining run may feed several rows
    (student and teacher exports)."""
    pretrain = [r for r in runs if r.kind == 'pretrain']
    for row in rows:
        if row.pretrained is None:
            continue
        ckpt = os.path.realpath(row.pretrained)
        found = [r for r in pretrain if ckpt.startswith(os.path.realpath(r.path) + os.sep)]
        cfg = (row.meta or {}).get('config')
        if not found and cfg:
            found = [r for r in pretrain if r.config and Path(r.config).name == Path(str(cfg)).name]
            if len(found) > 1:  # same config pretrained twice (seeds?): which one made this file is unknown
                row.note = (f'pretrained with {Path(str(cfg)).name}, which {len(found)} pretraining runs used: '
                            + ', '.join(str(r.path) for r in found))
                found = []
        row.pretrain_runs += found


def check_recipes(rows: list[Row], allow_mixed: bool) -> tuple[dict[str, list[str]], list[str]]:
    """Recipes per task; refuses (ReportError) to mix recipes in one column unless allowed, naming what differs."""
    recipes: dict[str, list[str]] = {}
    warnings = []
    for task in TASKS:
        runs = [r for row in rows for r in row.cells.get(task, Cell('')).runs]
        by_recipe: dict[str, list[Run]] = {}
        for r in runs:
            by_recipe.setdefault(r.recipe or '?', []).append(r)
        recipes[task] = sorted(by_recipe)
        for recipe, group in by_recipe.items():  # same recipe name, different settings (--cfg-options?)
            diff = _config_diff(group)
            if diff:
                warnings.append(f'{task} runs of recipe {recipe!r} were trained with different settings: {diff}')
        if len(by_recipe) > 1:
            listing = '; '.join(f'{rec}: ' + ', '.join(str(r.path) for r in grp) for rec, grp in by_recipe.items())
            diff = _config_diff([grp[0] for grp in by_recipe.values()])
            msg = f'{task} runs use {len(by_recipe)} recipes ({listing})' + (f'; they differ in {diff}' if diff else '')
            if not allow_mixed:
                raise ReportError(msg + '. Their numbers are not comparable in one column: report them separately, or '
                                  'pass --allow-mixed-recipes to show them together (each cell names its recipe).', 2)
            warnings.append(msg + ' (shown together: --allow-mixed-recipes)')
    return recipes, warnings


def _config_diff(runs: list[Run], limit: int = 8) -> str:
    cfgs = [r.config_flat for r in runs if r.config_flat is not None]
    if len(cfgs) < 2:
        return ''
    keys = sorted(set().union(*cfgs))
    differing = [k for k in keys if not k.startswith(IGNORED_CONFIG_KEYS)
                 and len({repr(c.get(k, '<unset>')) for c in cfgs}) > 1]
    shown = []
    for k in differing[:limit]:
        vals = ' vs '.join(f'{c.get(k, "<unset>")!r}' for c in cfgs[:3])
        shown.append(f'{k} ({vals})')
    more = f' and {len(differing) - limit} more' if len(differing) > limit else ''
    return ', '.join(shown) + more


def split_mixed_cells(rows: list[Row]) -> list[Row]:
    """With --allow-mixed-recipes a checkpoint fine-tuned with two recipes for one task gets one row per extra recipe:
    a cell never averages runs of different recipes."""
    in_column: dict[tuple[str, str], int] = {}  # (task, recipe) -> runs in the whole column
    for row in rows:
        for task, cell in row.cells.items():
            for r in cell.runs:
                in_column[task, r.recipe or '?'] = in_column.get((task, r.recipe or '?'), 0) + 1
    out = []
    for row in rows:
        out.append(row)
        for task, cell in list(row.cells.items()):
            by_recipe: dict[str, list[Run]] = {}
            for r in cell.runs:
                by_recipe.setdefault(r.recipe or '?', []).append(r)
            if len(by_recipe) < 2:
                continue
            ordered = sorted(by_recipe, key=lambda k: (-len(by_recipe[k]), -in_column[task, k], k))
            cell.runs = by_recipe[ordered[0]]
            for recipe in ordered[1:]:
                out.append(Row(name=f'{row.name} [{recipe}]', source='measured', pretrained=row.pretrained,
                               meta=row.meta, cells={task: Cell(state='', runs=by_recipe[recipe])},
                               note=f'{task} runs of recipe {recipe}; other tasks: see row {row.name!r}',
                               split_from=row.name))
    return out


def aggregate(rows: list[Row], tasks: list[str]) -> None:
    priority = [s for s in STATES if s != 'ok']
    for row in rows:
        if row.source == 'published':
            continue
        for task in tasks:
            cell = row.cells.setdefault(task, Cell(state='missing'))
            if not cell.runs:
                cell.state = 'none' if row.split_from else 'missing'
                continue
            cell.recipes = sorted({r.recipe or '?' for r in cell.runs})
            ok = [r for r in cell.runs if r.state == 'ok']
            cell.n_ok = len(ok)
            for m in (m for m in METRICS if m.task == task):
                vals = [r.metrics[m.name] for r in ok if r.metrics.get(m.name) is not None]
                bad = [r for r in ok if m.name in r.invalid]
                if bad:
                    cell.invalid[m.name] = bad
                if vals:
                    cell.n[m.name] = len(vals)
                    cell.values[m.name] = statistics.fmean(vals)
                    if len(vals) > 1:
                        cell.std[m.name] = statistics.stdev(vals)
                elif any(m.name in r.metrics for r in ok):
                    cell.values[m.name] = None  # n/a (no objects of that size)
            if len(ok) == len(cell.runs):
                cell.state = 'ok'
            elif ok:
                cell.state = 'partial'
            else:
                cell.state = next(s for s in priority if any(r.state == s for r in cell.runs))


def add_published(rows: list[Row], recipes: dict[str, list[str]]) -> list[str]:
    """The published reference rows. Their ImageNet numbers enter a classification column only when its runs are on
    ImageNet-1K too (or there are none): an IN-1K top-1 in a '(demo pool)' column would be mislabelled; the renderers
    quote such numbers in the row's notes instead (the Reference keeps them all)."""
    for p in PUBLISHED:
        row = Row(name=p.name, source='published', meta={'method': p.method, 'epochs': p.epochs}, note=p.note,
                  reference=p)
        for task in TASKS:
            if task in CLS_TASKS and recipes.get(task) and cls_data(recipes[task]) not in CLS_DATA:
                continue
            vals = {k: v for k, v in p.values.items() if any(m.name == k and m.task == task for m in METRICS)}
            if vals:
                row.cells[task] = Cell(state='published', values=vals, recipes=['published'])
        rows.append(row)
    demo = sorted({rec for recs in recipes.values() for rec in recs if 'demo' in rec})
    if demo:
        return [f'published rows are ViT-B/16 results of full-length recipes; the measured runs use demo recipes '
                f'({", ".join(demo)}): the numbers are not comparable']
    return []


def find_row(rows: list[Row], name: str) -> Row:
    """The row called `name`: exact, any case, 'random' for random init, or the one measured (else published) row
    whose name starts with the word(s) given ('sdae' -> 'sdae 300ep student')."""
    key = name.strip().lower()
    if key in ('random', 'random-init', 'random_init', 'scratch'):
        key = RANDOM_INIT
    for match in (lambda r: r.name == name, lambda r: r.name.lower() == key):
        found = [r for r in rows if match(r)]
        if found:
            return found[0]
    for source in ('measured', 'published'):
        found = [r for r in rows if r.source == source and r.name.lower().startswith(key + ' ')]
        if len(found) == 1:
            return found[0]
        if found:
            raise ReportError(f'--baseline {name!r} matches several rows: {", ".join(repr(r.name) for r in found)}', 2)
    raise ReportError(f'--baseline {name!r} is not a row of this report; rows: {", ".join(repr(r.name) for r in rows)}',
                      2)


def set_baseline(rows: list[Row], baseline: str | None) -> Row | None:
    if baseline is None:
        base = next((r for r in rows if r.name == RANDOM_INIT), None)
    else:
        base = find_row(rows, baseline)
    if base is None:
        return None
    base.is_baseline = True
    for row in rows:
        # A published number minus one of our (usually demo-scale) runs says nothing: published rows get deltas only
        # against a published baseline. Our rows may be compared to a published baseline (real-scale runs).
        if row is base or (row.source == 'published' and base.source != 'published'):
            continue
        for task, cell in row.cells.items():
            bcell = base.cells.get(task)
            if bcell is None:
                continue
            for k, v in cell.values.items():
                if v is not None and bcell.values.get(k) is not None:
                    cell.delta[k] = v - bcell.values[k]
            if cell.delta and bcell.recipes and cell.recipes and bcell.recipes != cell.recipes:
                cell.delta_note = f'recipes differ from the baseline ({", ".join(bcell.recipes)})'
    return base


def make_report(args: argparse.Namespace) -> Report:
    """Everything the renderers need; raises ReportError for what stops the report."""
    inputs: list[tuple[str | None, str]] = []
    for item in args.name:
        name, sep, path = item.partition('=')
        if not sep or not name or not path:
            raise ReportError(f'--name {item!r}: expected NAME=RUN_DIR', 2)
        inputs.append((name, path))
    inputs += [(None, d) for d in args.run_dirs]
    if not inputs:
        raise ReportError('no RUN_DIR given (pass run dirs, folders holding them, or --name NAME=RUN_DIR)', 2)

    runs, warnings = collect(inputs, args.stale_after_min * 60)
    # Frozen-feature probe results (tools/probe.py) under the same inputs; a folder of them alone is no missing run.
    probe_results, probe_notes, probe_inputs = find_probe_results([p for _, p in inputs])
    runs = [r for r in runs if not (r.state == 'missing' and str(r.path) in probe_inputs)]
    warnings = [w for w in warnings if not any(w.startswith(f'{p}: no run dir found') for p in probe_inputs)]
    warnings += probe_notes
    readable = [r for r in runs if r.kind is not None]
    if not readable and not probe_results:
        problems = [n for r in runs for n in r.notes] + warnings
        raise ReportError('no run could be read from ' + ', '.join(p for _, p in inputs) +
                          ('\n  ' + '\n  '.join(problems) if problems else ''), 1)
    for r in runs:
        if r.kind is None and r.state != 'missing':
            warnings.append(f'{r.path}: task unknown (no readable run_status.json or test_results.json); left out of '
                            'the tables')
    rows = build_rows(runs)
    recipes, recipe_warnings = check_recipes(rows, args.allow_mixed_recipes)
    warnings += recipe_warnings
    if args.allow_mixed_recipes:
        rows = split_mixed_cells(rows)
    tasks = [t for t in TASKS if any(t in row.cells for row in rows)]
    aggregate(rows, tasks)
    for row in rows:
        for task, cell in row.cells.items():
            cell.mixed = len(recipes.get(task, [])) > 1
    if args.published:
        warnings += add_published(rows, recipes)
    base = set_baseline(rows, args.baseline)
    warnings += [n for r in runs for n in r.notes]
    visuals, visual_warnings = find_visuals(getattr(args, 'visuals', None) or [])
    warnings += visual_warnings
    report = Report(title=args.title, generated=datetime.now(UTC).isoformat(timespec='seconds'),
                    inputs=[{'name': n, 'path': p} for n, p in inputs], rows=rows, runs=runs, tasks=tasks,
                    recipes=recipes, baseline=base.name if base else None, warnings=warnings,
                    pretrain_runs=[r for r in runs if r.kind == 'pretrain'], probe_results=probe_results,
                    visuals=visuals)
    report.verdict = report_verdict(report)
    return report


def generate(args: argparse.Namespace) -> int:
    """Write the report the parsed command line asks for; the exit code (0 ok, 1 nothing readable, 2 bad arguments)."""
    try:
        data = make_report(args)
    except ReportError as e:
        print(f'benchmark_report: error: {e}', file=sys.stderr)
        return e.code
    from sdae_suite.report.render import write_outputs  # matplotlib is imported only when there is something to draw

    out = Path(args.out)
    files = write_outputs(data, out)
    for w in data.warnings:
        print(f'warning: {w}', file=sys.stderr)
    n_ok = sum(r.state == 'ok' for r in data.runs)
    print(f'{len(data.runs)} runs ({n_ok} with results), {sum(r.source == "measured" for r in data.rows)} '
          f'checkpoints, baseline: {data.baseline or "none"}, {len(data.warnings)} warnings')
    for f in files:
        print(f'wrote {f}')
    return 0
