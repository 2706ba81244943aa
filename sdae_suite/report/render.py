"""Outputs of the benchmark report: results.json, results.csv, report.md, report.html and plots/*.png.

report.html is self-contained (plots as base64 PNG, inline CSS, no script, a Content-Security-Policy that forbids any
fetch) so it can be mailed or archived with a run.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt

from sdae_suite.contracts import REPORT_FORMAT
from sdae_suite.engine.atomic import WriteFailedError, atomic_write_bytes
from sdae_suite.report.probes import probe_plots, probe_table, probes_json
from sdae_suite.report.runs import (
    CLS_TASKS,
    CURVE_METRIC,
    METRIC_BY_NAME,
    METRICS,
    TASK_TITLES,
    Metric,
    Run,
    column_title,
    data_title,
    is_finite_number,
)
from sdae_suite.report.verdict import RULE
from sdae_suite.report.visuals import copy_visuals, visuals_html, visuals_markdown

if TYPE_CHECKING:
    from sdae_suite.report.model import Report

MAIN = [m for m in METRICS if m.main]
STATE_TEXT = {'missing': 'missing', 'none': '—', 'running': 'running', 'stalled': 'stalled', 'failed': 'FAILED',
              'test failed': 'TEST FAILED', 'invalid': 'INVALID', 'not tested': 'not tested', 'corrupt': 'CORRUPT',
              'unknown': 'unknown'}


def _atomic_write(path: Path, data: str | bytes) -> None:
    atomic_write_bytes(data.encode('utf-8') if isinstance(data, str) else data, path)


def _rel(path: Path | str | None) -> str | None:
    if path is None:
        return None
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return os.path.abspath(path) if rel.startswith('..') else rel  # short when inside the current folder


def _tex(label: str) -> str:
    """'AP^box' -> matplotlib mathtext superscript."""
    return re.sub(r'\^(\w+)', r'$^{\\mathrm{\1}}$', label)


def _when(iso: str | None) -> str:
    return iso[:16].replace('T', ' ') if iso else ''


def _num(v: float | None) -> str:
    return 'n/a' if v is None else f'{v:.2f}'


def cell_text(row, task: str, metric) -> str:
    """A table cell: value (± std over seeds) (delta to the baseline), or what became of the runs."""
    cell = row.cells.get(task)
    if cell is None or (cell.state == 'published' and metric.name not in cell.values):
        return ''
    if cell.state in ('ok', 'partial', 'published'):
        if metric.name not in cell.values:
            return 'INVALID' if metric.name in cell.invalid else '—'
        v = cell.values[metric.name]
        text = _num(v)
        if metric.name in cell.std:
            text += f' ± {cell.std[metric.name]:.2f}'
        if metric.name in cell.invalid:
            text += '†'
        if cell.state == 'partial':
            text += '*'
        if metric.name in cell.delta:
            text += f' ({cell.delta[metric.name]:+.2f})'
        if cell.mixed:
            text += f' [{", ".join(cell.recipes)}]'
        return text
    text = STATE_TEXT.get(cell.state, cell.state)
    if cell.state in ('running', 'stalled'):
        run = next(r for r in cell.runs if r.state == cell.state)
        last = [v for rec in run.val if (v := _val_value(rec, metric)) is not None]
        info = [run.progress] if run.progress else []
        info += [f'last val {last[-1]:.2f}'] if last else []
        text += f' ({"; ".join(info)})' if info else ''
    return text


def published_notes(row, tasks: list[str] | None) -> list[str]:
    """A published row's source, and its numbers that have no column in this report (a task not measured here, or
    IN-1K numbers beside classification runs on other data): quoted rather than lost."""
    ref = row.reference
    if ref is None:
        return []
    notes = [f'source: {ref.source}']
    if tasks is None:
        return notes

    def shown(name: str) -> bool:
        cell = row.cells.get(METRIC_BY_NAME[name].task)
        return METRIC_BY_NAME[name].task in tasks and cell is not None and name in cell.values

    left = [(METRIC_BY_NAME[k], v) for k, v in ref.values.items() if not shown(k)]
    if left:  # the classification numbers quoted are ImageNet-1K's (report.published)
        notes.append('also published: ' + ', '.join(
            f'{data_title(m, "in1k" if m.task in CLS_TASKS else None)} {v:.1f}' for m, v in left))
    return notes


def row_notes(row, tasks: list[str] | None = None) -> list[str]:
    """The notes of a row: its note, a published row's source (and numbers outside `tasks`, the report's columns),
    partial means and what became of each run that has no result."""
    notes = published_notes(row, tasks) + ([row.note] if row.note else [])
    for task, cell in row.cells.items():
        if cell.state == 'published':
            continue
        if cell.state == 'partial':
            notes.append(f'* {task}: mean of {cell.n_ok} of {len(cell.runs)} runs')
        elif cell.n_ok > 1:
            notes.append(f'{task}: mean ± std of {cell.n_ok} runs')
        for name, n in cell.n.items():
            if n < cell.n_ok:  # e.g. top-1 max of runs of which only some validated during training
                notes.append(f'{task} {METRIC_BY_NAME[name].label}: mean of the {n} of {cell.n_ok} runs that have it')
        for r in cell.runs:
            if r.state != 'ok':
                error = r.error.strip().splitlines()[-1] if r.error and r.error.strip() else ''
                notes.append(f'{task} {_rel(r.path)}: {r.state}' + (f' ({error})' if error else ''))
        for name, runs in cell.invalid.items():
            notes.append(f'{"" if name not in cell.values else "† "}{task} {METRIC_BY_NAME[name].label}: invalid '
                         f'value left out: ' + ', '.join(f'{_rel(r.path / "test_results.json")} ({r.invalid[name]!r})'
                                                           for r in runs))
        if cell.delta_note:
            notes.append(f'{task}: {cell.delta_note}')
    return notes


def _cell_json(cell) -> dict[str, Any]:
    return {'state': cell.state, 'recipes': cell.recipes, 'n_runs': len(cell.runs), 'n_ok': cell.n_ok,
            'values': cell.values, 'std': cell.std, 'n': cell.n, 'delta': cell.delta, 'delta_note': cell.delta_note,
            'invalid': {k: [_rel(r.path) for r in v] for k, v in cell.invalid.items()},
            'runs': [_rel(r.path) for r in cell.runs]}


def _run_json(run: Run, row_of: dict[int, str]) -> dict[str, Any]:
    return {'path': _rel(run.path), 'kind': run.kind, 'recipe': run.recipe, 'state': run.state, 'status': run.status,
            'row': row_of.get(id(run)), 'pretrained': run.pretrained, 'pretrained_meta': run.pretrained_meta,
            'metrics': run.metrics, 'invalid_metrics': {k: repr(v) for k, v in run.invalid.items()},
            'progress': run.progress, 'started': run.started, 'ended': run.ended, 'error': run.error,
            'notes': run.notes, 'final_loss': _final_loss(run)}


def _final_loss(run: Run) -> float | None:
    losses = [rec['loss'] for rec in run.train if isinstance(rec.get('loss'), (int, float))]  # NaN: diverged
    return float(losses[-1]) if losses else None


def _row_of(report: Report) -> dict[int, str]:
    out = {}
    for row in report.rows:
        for cell in row.cells.values():
            for r in cell.runs:
                out[id(r)] = row.name
        for r in row.pretrain_runs:
            out[id(r)] = row.name
    return out


def _json_safe(obj: Any) -> Any:
    """Strict JSON: a NaN / inf (diverged loss) becomes its name."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def results_json(report: Report, plots: list[dict]) -> dict[str, Any]:
    row_of = _row_of(report)
    v = report.verdict
    return {
        'format': REPORT_FORMAT, 'version': 1, 'title': report.title,
        'ranking': {m['metric']: m['ranking'] for m in v['metrics']},
        'verdict': {'baseline': v['baseline'], 'rule': RULE, 'summary_line': v['summary_line'],
                    'table': v['table'].to_json() if v.get('table') else None,
                    'summary': v['summary'], 'pairs': {m['metric']: m['pairs'] for m in v['metrics']},
                    'lines': v['lines']},
        'generated': report.generated, 'inputs': report.inputs, 'baseline': report.baseline,
        'tasks': report.tasks, 'recipes': report.recipes,
        'metrics': [{'name': m.name, 'key': m.key, 'label': m.label, 'task': m.task, 'main': m.main,
                     'title': column_title(m, report.recipes.get(m.task, [])), 'unit': 'percent'} for m in METRICS],
        'columns': [{'task': m.task, 'metric': m.name, 'title': t} for m, t in main_columns(report)],
        'rows': [{'name': r.name, 'source': r.source, 'is_baseline': r.is_baseline, 'pretrained': r.pretrained,
                  'provenance': r.provenance(), 'note': r.note, 'notes': row_notes(r, report.tasks),
                  'reference': None if r.reference is None else {
                      'source': r.reference.source, 'values': r.reference.values, 'note': r.reference.note},
                  'cells': {t: _cell_json(c) for t, c in r.cells.items()},
                  'pretraining_runs': [_rel(p.path) for p in r.pretrain_runs]} for r in report.rows],
        'runs': [_run_json(r, row_of) for r in report.runs],
        'warnings': report.warnings, 'plots': plots, 'probes': probes_json(report),
    }


def write_csv(report: Report, path: Path) -> None:
    metrics = [m for m in METRICS if m.task in report.tasks]
    header = ['row', 'source', 'is_baseline', 'method', 'pt_epochs', 'branch', 'pretrained']
    for t in report.tasks:
        header += [f'{t}_state', f'{t}_recipes', f'{t}_n_ok', f'{t}_n_runs']
        header += [m.name for m in metrics if m.task == t]
        header += [f'{m.name}_std' for m in metrics if m.task == t]
        header += [f'delta_{m.name}' for m in metrics if m.task == t]
    header.append('notes')
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator='\n')
    w.writerow(header)
    for row in report.rows:
        prov = row.provenance()
        line = [row.name, row.source, int(row.is_baseline), prov.get('method') or '', prov.get('epochs') or '',
                prov.get('branch') or '', row.pretrained or '']
        for t in report.tasks:
            cell = row.cells.get(t)
            if cell is None:
                line += ['', '', '', ''] + [''] * 3 * sum(m.task == t for m in metrics)
                continue
            line += [cell.state, ' '.join(cell.recipes), cell.n_ok, len(cell.runs)]
            for part in (cell.values, cell.std, cell.delta):
                line += ['' if part.get(m.name) is None else round(part[m.name], 4) for m in metrics if m.task == t]
        line.append(' | '.join(row_notes(row, report.tasks)))
        w.writerow(line)
    _atomic_write(path, buf.getvalue())


# ---------------------------------------------------------------- plots

def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=110, bbox_inches='tight')
    plt.close(fig)
    _atomic_write(path, buf.getvalue())


def _val_value(rec: dict, metric) -> float | None:
    v = rec.get(metric.key)
    if v is None:
        v = next((x for k, x in rec.items() if k.endswith('/' + metric.key)), None)
    return v * metric.scale if is_finite_number(v) and v != -1 else None  # a NaN / string never reaches a plot


def _no_validation_why(runs: list[Run]) -> str:
    """Why runs have no validation line: the config as trained says so when it can (the demo pipeline passes
    train_cfg.val_begin past the end: its test stage makes that evaluation next)."""
    def skipped(r: Run) -> bool:
        cfg = r.config_flat or {}
        end = cfg.get('train_cfg.max_iters') or cfg.get('train_cfg.max_epochs')
        begin, every = cfg.get('train_cfg.val_begin'), cfg.get('train_cfg.val_interval')
        return is_finite_number(end) and any(is_finite_number(x) and x > end for x in (begin, every))
    if runs and all(skipped(r) for r in runs):
        return 'train_cfg.val_begin or val_interval is past the end of training'
    return 'no validation line in their logs'


def _curves(report: Report, task: str, row_of: dict[int, str], plot_dir: Path) -> dict | None:
    """'plots/curves_<task>.png': training loss and validation metric of every run of the task, one panel each. A
    panel without data is not drawn (an empty axis reads as a broken plot): runs that did not validate during
    training get the loss panel only and a one-line note saying so and why. None when nothing can be drawn."""
    metric = CURVE_METRIC[task]
    series = []  # (run, loss points, validation points)
    for r in (r for row in report.rows if task in row.cells for r in row.cells[task].runs):
        loss = [(rec['step'], rec['loss']) for rec in r.train if is_finite_number(rec.get('loss'))]
        val = [(rec['step'], v) for rec in r.val if (v := _val_value(rec, metric)) is not None]
        if loss or val:
            series.append((r, loss, val))
    if not series:
        return None
    has_loss, has_val = any(s[1] for s in series), any(s[2] for s in series)
    fig, axes = plt.subplots(1, has_loss + has_val, figsize=(5 * (has_loss + has_val), 3.6), squeeze=False)
    ax_l = axes[0][0] if has_loss else None
    ax_m = axes[0][-1] if has_val else None
    names = list(dict.fromkeys(row_of.get(id(r), '?') for r, _, _ in series))
    seen: dict[str, int] = {}
    for r, loss, val in series:  # one colour per checkpoint, one line style per run (seed) of it
        name = row_of.get(id(r), '?')
        style = dict(color=f'C{names.index(name) % 10}', ls=('-', '--', ':', '-.')[seen.get(name, 0) % 4], lw=1,
                     label=f'{name} ({r.path.name}, {r.state})')
        seen[name] = seen.get(name, 0) + 1
        if loss:
            ax_l.plot(*zip(*loss), **style)
        if val:
            ax_m.plot(*zip(*val), marker='o', ms=3, **style)
    title = TASK_TITLES[task]
    if ax_l is not None:
        ax_l.set(xlabel='iteration', ylabel='training loss', title=f'{title}: training loss')
    if ax_m is not None:
        by_epoch = any('epoch' in rec for r, _, _ in series for rec in r.train)
        label = _tex(column_title(metric, report.recipes.get(task, [])) if task in CLS_TASKS else metric.label)
        ax_m.set(xlabel='epoch' if by_epoch else 'iteration', ylabel=f'val {label} (%)',
                 title=f'{title}: validation {label}')
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    name = f'curves_{task}.png'
    _save(fig, plot_dir / name)
    plot = {'file': f'plots/{name}', 'title': f'{title} fine-tuning curves'}
    if not has_val:
        plot['note'] = (f'{title}: no validation curve: the runs did not validate during training '
                        f'({_no_validation_why([r for r, _, _ in series])}); their numbers are the test results.')
    return plot


def make_plots(report: Report, plot_dir: Path) -> list[dict]:
    """Draw the report's plots into ``plot_dir``. The previous report's plots there are stale, but removed only once the
    new ones are written: a write that fails on a full disk leaves each plot the old or the new complete file."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    previous = set(plot_dir.glob('*.png'))
    try:
        plots = _draw_plots(report, plot_dir)
    except WriteFailedError:
        raise
    except Exception:
        for old in previous:  # drawing failed (write_outputs warns): no stale plot stays beside the new report
            old.unlink(missing_ok=True)
        raise
    for old in previous - {plot_dir / Path(p['file']).name for p in plots}:
        old.unlink()
    return plots


def _draw_plots(report: Report, plot_dir: Path) -> list[dict]:
    plots = []
    rows = report.rows
    for m in MAIN:
        if m.task not in report.tasks:
            continue
        entries = [(r, r.cells[m.task]) for r in rows if m.task in r.cells
                   and r.cells[m.task].state in ('ok', 'partial', 'published')
                   and r.cells[m.task].values.get(m.name) is not None]
        if not entries:
            continue
        fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(entries) + 1.5), 3.4))
        xs = range(len(entries))
        vals = [c.values[m.name] for _, c in entries]
        errs = [c.std.get(m.name, 0.0) for _, c in entries]
        colors = ['#bbbbbb' if r.source == 'published' else '#d62728' if r.is_baseline else '#1f77b4'
                  for r, _ in entries]
        bars = ax.bar(xs, vals, yerr=errs, color=colors, capsize=3)
        for bar, (r, _) in zip(bars, entries):
            if r.source == 'published':
                bar.set_hatch('//')
        ax.bar_label(bars, labels=[f'{v:.1f}' for v in vals], fontsize=8)
        ax.set_xticks(list(xs), [r.name for r, _ in entries], rotation=25, ha='right', fontsize=8)
        label = _tex(column_title(m, report.recipes.get(m.task, [])) if m.task in CLS_TASKS else m.label)
        ax.set_ylabel(f'{label} (%)')
        ax.set_title(f'{TASK_TITLES[m.task]}: {label}' + ('  (hatched: published)' if any(
            r.source == 'published' for r, _ in entries) else ''), fontsize=9)
        name = f'bars_{m.name}.png'
        _save(fig, plot_dir / name)
        plots.append({'file': f'plots/{name}', 'title': f'{m.label} per checkpoint'})

    row_of = _row_of(report)
    for task in report.tasks:
        plot = _curves(report, task, row_of, plot_dir)
        if plot:
            plots.append(plot)

    pre = [r for r in report.pretrain_runs if any(is_finite_number(x.get('loss')) for x in r.train)]
    if pre:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for r in pre:
            pts = [(rec['step'], rec['loss']) for rec in r.train if is_finite_number(rec.get('loss'))]
            ax.plot(*zip(*pts), lw=1, label=f'{r.recipe} ({_rel(r.path)}, {r.state})')
        ax.set(xlabel='iteration', ylabel='loss', title='Pretraining loss')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        _save(fig, plot_dir / 'pretrain_loss.png')
        plots.append({'file': 'plots/pretrain_loss.png', 'title': 'Pretraining loss curves'})
    plots += probe_plots(report, plot_dir, _save, _rel)
    return plots


# ---------------------------------------------------------------- tables (shared by Markdown and HTML)

def tables(report: Report) -> list[tuple[str, list[str], list[list[str]], list[str], list[str]]]:
    """(title, header, body rows, notes under the table, per-row state for css) for every table of the report."""
    rows, tasks = report.rows, report.tasks
    out = []
    header = ['checkpoint', 'method', 'PT epochs', 'branch']
    columns = main_columns(report)
    main = [m for m, _ in columns]
    header += [title for _, title in columns] + ['notes']
    body, states = [], []
    for row in rows:
        prov = row.provenance()
        name = row.name + (' (baseline)' if row.is_baseline else '') + (' (published)' if row.source == 'published'
                                                                         and 'published' not in row.name else '')
        body.append([name, str(prov.get('method') or ''), str(prov.get('epochs') or ''), str(prov.get('branch') or '')]
                    + [cell_text(row, m.task, m) for m in main] + ['; '.join(row_notes(row, tasks))])
        states.append('published' if row.source == 'published' else
                      min((c.state for c in row.cells.values()), key=lambda s: s == 'ok'))
    recipes = '; '.join(f'{t}: {", ".join(report.recipes.get(t) or ["-"])}' for t in tasks)
    notes = ([f'Recipes: {recipes}.', _legend(report)] if tasks else
             ['No fine-tuning run found (detection, segmentation or classification).'])
    if any(r.source == 'published' for r in rows):
        notes.append('Published rows (--published) are quoted, not measured here: each names its source in its notes; '
                     'numbers without a column in this report are quoted there as "also published".'
                     + (' Published ImageNet top-1 sit in the top-1 columns; the official MAE / SdAE fine-tuning code '
                        'prints the best epoch\'s top-1, so top-1 max is the closer comparison where a run has it.'
                        if any(t in CLS_TASKS for t in tasks) else ''))
    out.append(('Results', header, body, notes, states))
    if (probe := probe_table(report)) is not None:  # frozen-feature probes, right beside the fine-tuning results
        out.append(probe)

    for task in tasks:
        ms = [m for m in METRICS if m.task == task]
        if all(m.main for m in ms):
            continue
        body = [[row.name] + [cell_text(row, task, m) for m in ms] for row in rows if task in row.cells]
        out.append((f'{TASK_TITLES[task]}: all metrics', ['checkpoint'] + [m.label for m in ms], body,
                    ['AP in percent; n/a: no ground truth of that size (pycocotools -1); INVALID, †, —: see the '
                     'legend under Results.'], [''] * len(body)))

    body = []
    for row in rows:
        if row.source != 'measured':
            continue
        p = row.provenance()
        body.append([row.name, str(p.get('method') or ''), str(p.get('epochs') or ''), str(p.get('branch') or ''),
                     # 12 hex digits identify a commit; the full hash (results.json) would widen the table
                     str(p.get('arch') or ''), str(p.get('config') or ''), str(p.get('git_commit') or '')[:12],
                     _rel(row.pretrained) or '(random init)', ', '.join(_rel(r.path) for r in row.pretrain_runs)])
    out.append(('Pretraining provenance', ['checkpoint', 'method', 'epochs', 'branch', 'arch', 'pretraining config',
                                           'git commit', 'checkpoint file', 'pretraining run'], body,
                ['Read from the exported backbone metadata (run_status.json pretrained_meta).'], [''] * len(body)))

    body = []
    for r in report.pretrain_runs:
        cfg = r.config_flat or {}
        loss = _final_loss(r)
        exported = [row.name for row in rows if r in row.pretrain_runs]
        body.append([_rel(r.path), r.recipe or '?', str(cfg.get('model.objective') or ''), r.state, r.progress or '',
                     '' if loss is None else f'{loss:.4f}', ', '.join(exported)])
    out.append(('Pretraining runs', ['run dir', 'recipe', 'objective', 'state', 'progress', 'final loss',
                                     'checkpoint rows'], body, [], [r.state for r in report.pretrain_runs]))

    row_of = _row_of(report)
    body, states = [], []
    for r in report.runs:
        headline = ', '.join(f'{m.label} {_num(r.metrics[m.name]) if m.name in r.metrics else "INVALID"}'
                             for m in MAIN if m.name in r.metrics or m.name in r.invalid)
        loss = _final_loss(r)
        body.append([_rel(r.path), r.kind or '?', r.recipe or '?', row_of.get(id(r), ''), r.state,
                     r.progress or '', headline or ('' if loss is None else f'final loss {loss:.4f}'),
                     _when(r.started), _when(r.ended), '; '.join(([r.error] if r.error else []) + r.notes)])
        states.append(r.state)
    out.append(('Runs', ['run dir', 'task', 'recipe', 'row', 'state', 'progress', 'result', 'started', 'ended',
                         'errors / notes'], body, [], states))
    return out


def main_columns(report: Report) -> list[tuple[Metric, str]]:
    """(metric, column title) of the Results table: the main metrics of the tasks measured, an optional one (top-1
    max) only when some row has it."""
    out = []
    for m in MAIN:
        if m.task not in report.tasks:
            continue
        if m.optional and not any(m.name in c.values or m.name in c.invalid
                                  for row in report.rows if (c := row.cells.get(m.task)) is not None):
            continue
        out.append((m, column_title(m, report.recipes.get(m.task, []))))
    return out


# How a classification column's title names its data (runs.column_title), for the legend.
CLS_LEGEND = ('Classification top-1 / top-5 in percent, of the tested checkpoint (the last epoch); top-1 max: the best '
              'top-1 over the epochs validated during training, the number the official MAE / SdAE fine-tuning code '
              'prints (absent when a run did not validate). A classification column names its data after the last '
              '"_" field of its recipe names (mmpretrain\'s convention): _in1k -> IN-1K; _demo -> demo pool (the '
              'demo\'s small class-folder set, not ImageNet); any other field is shown as written. ')


def _legend(report: Report) -> str:
    base = report.baseline
    return ((f'Deltas (in parentheses) against the baseline row {base!r}. ' if base else
             'No baseline row (pass --baseline NAME for deltas). ') +
            ('COCO AP in percent (CocoMetric fractions x100). ' if 'det' in report.tasks else '') +
            ('ADE mIoU/mAcc/aAcc in percent. ' if 'seg' in report.tasks else '') +
            (CLS_LEGEND if any(t in CLS_TASKS for t in report.tasks) else '') +
            '± : std over runs (seeds). *: mean of the runs that finished. ' +
            ('n/a: no ground truth of that size (pycocotools -1). ' if 'det' in report.tasks else '') +
            'INVALID: the stored value is not a number (see notes); it is left out of means and plots; †: mean '
            'without such values. —: not in the test results. missing: no run; running / stalled: not finished; '
            'FAILED / TEST FAILED / CORRUPT: see notes and the Runs table.')


def _md_escape(text: str) -> str:
    return text.replace('|', '\\|').replace('\n', ' ')


def verdict_table(report: Report) -> tuple[list[str], list[list[str]], list[str], str] | None:
    """(header, body, per-cell outcome of each body row, legend) of the verdict table: one row per init, one column per
    metric, each cell the init against the baseline ('win +4.30'); None without a baseline to compare against."""
    table = report.verdict.get('table')
    if not table or not table.metrics:
        return None
    header = [f'init vs {table.baseline}'] + table.metrics
    body, outcomes = [], []
    for init in table.inits:
        cells = [table.cells[init].get(m) for m in table.metrics]
        body.append([init] + [c.text if c else '—' for c in cells])
        outcomes.append([''] + [c.outcome if c else '' for c in cells])
    base = table.baseline
    legend = (f'Each cell: the init against {base}, then its mean minus {base}\'s in points. win / loss: every seed '
              f'above / below every seed of {base} (at least 2 seeds each); tie: the seed ranges overlap; 1 seed: a '
              'side has a single seed, the spread is unknown and no call is made; —: no value on one side.')
    return header, body, outcomes, legend


def _summary_parts(line: str) -> tuple[str, str]:
    """('Verdict:', the rest) so only the word is bold, not a whole paragraph."""
    head, _, rest = line.partition(': ')
    return head + ':', rest


def verdict_markdown(report: Report) -> list[str]:
    """The report's opening section: the one-line verdict, the verdict table, then the inits ranked on every metric
    with each pair's verdict."""
    v = report.verdict
    if not v['metrics']:
        return []
    lines = ['## Ranking and verdict', '']
    if v['summary_line']:
        head, rest = _summary_parts(v['summary_line'])
        lines += [f'**{head}** {rest}', '']
    if (vt := verdict_table(report)) is not None:
        header, body, _, legend = vt
        lines += ['| ' + ' | '.join(_md_escape(h) for h in header) + ' |', '|' + '---|' * len(header)]
        lines += ['| ' + ' | '.join(_md_escape(c) for c in row) + ' |' for row in body] + ['', legend, '']
    lines += ['### Ranking per metric', '']
    for m in v['metrics']:
        lines += [f'**{m["metric"]}**: {m["line"]}'] + [f'- {p["line"]}' for p in m['pairs']] + ['']
    return lines + [RULE, '']


def markdown(report: Report, plots: list[dict]) -> str:
    lines = [f'# {report.title}', '', *verdict_markdown(report), f'Generated {report.generated} from '
             f'{", ".join(_rel(i["path"]) or "" for i in report.inputs)}.', '']
    if report.warnings:
        lines += ['## Warnings', ''] + [f'- {_md_escape(w)}' for w in report.warnings] + ['']
    for title, header, body, notes, _ in tables(report):
        if not body and title != 'Results':
            continue
        lines += [f'## {title}', '', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
        lines += ['| ' + ' | '.join(_md_escape(c) for c in row) + ' |' for row in body]
        lines += [''] + [_md_escape(n) for n in notes] + ([''] if notes else [])
    if plots:
        lines += ['## Plots', '']
        for p in plots:
            lines += [f'![{p["title"]}]({p["file"]})'] + (['', _md_escape(p['note']), ''] if p.get('note') else [])
        lines += ['']
    lines += visuals_markdown(report.visuals)
    return '\n'.join(lines)


CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:8px 0 4px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;
vertical-align:top}th{background:#f2f2f2}tr.published td{color:#666;font-style:italic}tr.baseline td{font-weight:600}
tr.failed td,tr.corrupt td,tr.test-failed td,tr.invalid td{background:#fde8e8}tr.running td,tr.stalled td,
tr.not-tested td,tr.partial td,tr.missing td{background:#fff6dd}.warn{background:#fff3cd;border:1px solid #e0c36a;
padding:8px 12px}p.note{color:#555;margin:2px 0}figure{display:inline-block;margin:8px}img{max-width:100%}
code{font-size:13px}td,th,code{overflow-wrap:break-word}td.path,code{overflow-wrap:anywhere}
figure.visual{display:block;margin:8px 0}figure.visual figcaption{color:#555;max-width:1100px}
figcaption .note{color:#555;display:block;max-width:560px}table.verdict td.win{background:#e3f4e1}
table.verdict td.loss{background:#fde8e8}table.verdict td.tie,table.verdict td.one-seed{background:#f4f4f4}"""
# Cells holding paths (td.path) may break anywhere, so a wide table (the provenance and runs tables, the 13-column
# COCO table) shrinks its columns to a 1280-px laptop window instead of overflowing it; words and numbers elsewhere
# only wrap at spaces (breaking them anywhere would split 'FAILED' or a header into letters).


def _sup(label: str) -> str:
    return re.sub(r'\^(\w+)', r'<sup>\1</sup>', html.escape(label))


def _path_class(cell: str) -> str:
    """' class="path"' for a cell that holds a path (or a list of them): it may wrap anywhere."""
    return ' class="path"' if '/' in cell or os.sep in cell else ''


def verdict_html(report: Report) -> list[str]:
    v = report.verdict
    if not v['metrics']:
        return []
    parts = ['<section class="verdict"><h2>Ranking and verdict</h2>']
    if v['summary_line']:
        head, rest = _summary_parts(v['summary_line'])
        parts.append(f'<p class="summary"><b>{_sup(head)}</b> {_sup(rest)}</p>')
    if (vt := verdict_table(report)) is not None:
        header, body, outcomes, legend = vt
        parts.append('<table class="verdict"><thead><tr>' + ''.join(f'<th>{_sup(h)}</th>' for h in header)
                     + '</tr></thead><tbody>')
        for row, classes in zip(body, outcomes):
            parts.append('<tr>' + ''.join(f'<td class="{html.escape(c.replace(" ", "-"))}">{_sup(t)}</td>' if c else
                                          f'<td>{_sup(t)}</td>' for t, c in zip(row, classes)) + '</tr>')
        parts.append(f'</tbody></table><p class="note">{html.escape(legend)}</p>')
    parts.append('<h3>Ranking per metric</h3>')
    for m in v['metrics']:
        parts.append(f'<p><b>{_sup(m["metric"])}</b>: {_sup(m["line"])}</p><ul>'
                     + ''.join(f'<li>{_sup(p["line"])}</li>' for p in m['pairs']) + '</ul>')
    parts.append(f'<p class="note">{html.escape(RULE)}</p></section>')
    return parts


def html_report(report: Report, plots: list[dict], out: Path) -> str:
    e = html.escape
    parts = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
             # Nothing may be fetched: the file must render the same when mailed or archived.
             '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
             'style-src \'unsafe-inline\'">',
             f'<title>{e(report.title)}</title><style>{CSS}</style></head><body>',
             f'<h1>{e(report.title)}</h1>', *verdict_html(report),
             f'<p>Generated {e(report.generated)} from <code>'
             f'{e(", ".join(_rel(i["path"]) or "" for i in report.inputs))}</code>.</p>']
    if report.warnings:
        parts.append('<div class="warn"><b>Warnings</b><ul>' +
                     ''.join(f'<li>{e(w)}</li>' for w in report.warnings) + '</ul></div>')
    for title, header, body, notes, states in tables(report):
        if not body and title != 'Results':
            continue
        parts.append(f'<h2>{e(title)}</h2><table><thead><tr>' + ''.join(f'<th>{_sup(h)}</th>' for h in header) +
                     '</tr></thead><tbody>')
        for row, state in zip(body, states):
            cls = state.replace(' ', '-') + (' baseline' if '(baseline)' in row[0] else '')
            parts.append(f'<tr class="{e(cls)}">' + ''.join(f'<td{_path_class(c)}>{_sup(c)}</td>' for c in row)
                         + '</tr>')
        parts.append('</tbody></table>' + ''.join(f'<p class="note">{e(n)}</p>' for n in notes))
    if plots:
        parts.append('<h2>Plots</h2>')
        for p in plots:
            data = base64.b64encode((out / p['file']).read_bytes()).decode('ascii')
            note = f'<span class="note">{e(p["note"])}</span>' if p.get('note') else ''
            parts.append(f'<figure><img alt="{e(p["title"])}" src="data:image/png;base64,{data}">'
                         f'<figcaption>{e(p["title"])}{note}</figcaption></figure>')
    parts += visuals_html(report.visuals, out)
    parts.append('</body></html>')
    return '\n'.join(parts)


def write_outputs(report: Report, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    try:
        plots = make_plots(report, out / 'plots')
    except WriteFailedError:
        raise  # a full disk is not a plot problem: the report stops there, with its one line (the old files intact)
    except Exception as exc:  # noqa: BLE001  (a plot must not cost the tables)
        report.warnings.append(f'plots could not be drawn ({exc.__class__.__name__}: {exc})')
        plots = []
    copy_visuals(report.visuals, out)
    results = _json_safe(results_json(report, plots))
    _atomic_write(out / 'results.json', json.dumps(results, indent=1, allow_nan=False) + '\n')
    write_csv(report, out / 'results.csv')
    _atomic_write(out / 'report.md', markdown(report, plots))
    _atomic_write(out / 'report.html', html_report(report, plots, out))
    return [out / n for n in ('report.md', 'report.html', 'results.json', 'results.csv')] + [out / p['file']
                                                                                           for p in plots] + [
        out / f['file'] for sec in report.visuals for f in sec['figures']]
