"""Frozen-feature probe results in the benchmark report: the table beside fine-tuning (mean ± std over seeds) and the
probe-vs-pretraining-epoch curves of pretraining runs.

Reads only what the suite writes: ``sdae_suite.probes.suite`` result files (``<out>/<name>/<probe>_seed<seed>.json``,
format ``sdae-suite/probe-result``) found under the report's inputs, and the ``probe/*`` lines that
``sdae_suite.pretrain.probe_hook.ProbeHook`` adds to a pretraining run's scalars.json.
"""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdae_suite.contracts import PROBE_RESULT_FILE, PROBE_RESULT_FORMAT, RANDOM_INIT
from sdae_suite.report.runs import is_finite_number

if TYPE_CHECKING:
    from sdae_suite.report.model import Report

# (probe, metric key, column label); all in percent.
COLUMNS = [('knn', 'top1', 'k-NN top-1'), ('linear', 'top1', 'linear top-1'), ('seg', 'mIoU', 'linear-seg mIoU')]
CURVES = [('probe/knn_top1', 'k-NN top-1 (%)'), ('probe/seg_mIoU', 'linear-seg mIoU (%)')]


def find_probe_results(paths: list[str]) -> tuple[list[dict], list[str], set[str]]:
    """(results, notes naming unreadable files, the input paths that held any result)."""
    results, notes, found_in = [], [], set()
    seen = set()
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob('*_seed*.json')
                                                     if PROBE_RESULT_FILE.match(p.name))
        for f in files:
            key = os.path.realpath(f)
            if key in seen:
                continue
            seen.add(key)
            try:
                data = json.loads(f.read_text(encoding='utf-8'))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                notes.append(f'{f}: unreadable probe result ({e.__class__.__name__}); rerun tools/probe.py for it')
                continue
            if not isinstance(data, dict) or data.get('format') != PROBE_RESULT_FORMAT:
                continue  # some other JSON that happens to be named like a result
            if not isinstance(data.get('metrics'), dict):
                notes.append(f'{f}: probe result without metrics; rerun tools/probe.py for it')
                continue
            results.append(dict(data, file=str(f)))
            found_in.add(raw)
    return results, notes, found_in


def _row_names(report: Report) -> dict[str, str]:
    """checkpoint realpath -> the fine-tuning row's name, so a checkpoint has one name in both tables."""
    out = {}
    for row in report.rows:
        if row.source == 'measured' and row.pretrained:
            out[os.path.realpath(row.pretrained)] = row.name
    return out


def aggregate(report: Report) -> list[dict[str, Any]]:
    """One entry per checkpoint: {'name', 'checkpoint', 'cells': {label: (mean, std | None, n)}, 'per_seed': {label:
    [value per seed, in seed order]}, 'seeds'}."""
    names = _row_names(report)
    groups: dict[str, dict] = {}
    for r in report.probe_results:
        ckpt = r.get('checkpoint')
        name = names.get(os.path.realpath(ckpt), r.get('name')) if ckpt else (r.get('name') or RANDOM_INIT)
        g = groups.setdefault(name, {'name': name, 'checkpoint': ckpt, 'values': {}, 'seeds': set()})
        g['seeds'].add(r.get('seed'))
        for probe, key, label in COLUMNS:
            v = r['metrics'].get(key)
            if r.get('probe') == probe and is_finite_number(v):
                g['values'].setdefault(label, {})[r.get('seed')] = float(v)  # a rerun of a seed replaces it
    out = []
    for g in groups.values():
        cells, per_seed = {}, {}
        for label, by_seed in g['values'].items():
            vals = per_seed[label] = [by_seed[s] for s in sorted(by_seed, key=lambda s: (s is None, s or 0))]
            cells[label] = (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))
        out.append({'name': g['name'], 'checkpoint': g['checkpoint'], 'cells': cells, 'per_seed': per_seed,
                    'seeds': sorted(s for s in g['seeds'] if s is not None)})
    return out


def probe_table(report: Report) -> tuple[str, list[str], list[list[str]], list[str], list[str]] | None:
    """The table in the shape ``sdae_suite.report.render.tables`` returns (title, header, body, notes, row states)."""
    entries = aggregate(report)
    if not entries:
        return None
    body = []
    for e in entries:
        row = [e['name']]
        for _, _, label in COLUMNS:
            if label not in e['cells']:
                row.append('—')
                continue
            mean, std, n = e['cells'][label]
            row.append(f'{mean:.2f}' + (f' ± {std:.2f}' if std is not None else '') + (f' (n={n})' if n > 1 else ''))
        row.append(', '.join(map(str, e['seeds'])))
        body.append(row)
    notes = ['Frozen features (tools/probe.py): k-NN (cosine, k=20, T=0.07 weighted votes) and linear classifier on '
             'the pooled patch tokens of a held-out split of the class folders; linear segmentation (BatchNorm + 1x1 '
             'conv on the last block\'s patch tokens) scored by mmseg\'s IoUMetric. Percent; ± : std over seeds '
             '(n); a pretrained checkpoint\'s k-NN does not depend on the seed, a random init is one draw per seed.']
    return ('Frozen-feature probes', ['checkpoint'] + [c[2] for c in COLUMNS] + ['seeds'], body, notes,
            ['ok'] * len(body))


def probe_curves(run) -> dict[str, list[tuple[int, float]]]:
    """A pretraining run's probe points: scalars.json key -> [(epoch, value)] (later sessions win per epoch)."""
    out: dict[str, dict[int, float]] = {}
    for rec in list(run.val) + list(run.train):
        ep = rec.get('epoch')
        for key, _ in CURVES:
            if key in rec and is_finite_number(rec[key]) and is_finite_number(ep):
                out.setdefault(key, {})[int(ep)] = float(rec[key])
    return {k: sorted(v.items()) for k, v in out.items()}


def probe_plots(report: Report, plot_dir: Path, save, rel) -> list[dict]:
    """'plots/pretrain_probes.png': probe vs pretraining epoch, one curve per pretraining run."""
    import matplotlib.pyplot as plt
    runs = [(r, c) for r in report.pretrain_runs if (c := probe_curves(r))]
    if not runs:
        return []
    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 3.6))
    for ax, (key, label) in zip(axes, CURVES):
        for r, curves in runs:
            if key in curves:
                ax.plot(*zip(*curves[key]), marker='o', ms=3, lw=1, label=f'{r.recipe or "?"} ({rel(r.path)})')
        ax.set(xlabel='pretraining epoch', ylabel=label, title=f'Probe during pretraining: {label}')
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    save(fig, plot_dir / 'pretrain_probes.png')
    return [{'file': 'plots/pretrain_probes.png', 'title': 'Frozen-feature probes during pretraining'}]


def probes_json(report: Report) -> list[dict]:
    """The probe table for results.json."""
    return [{'name': e['name'], 'checkpoint': e['checkpoint'], 'seeds': e['seeds'],
             'values': {k: {'mean': m, 'std': s, 'n': n} for k, (m, s, n) in e['cells'].items()}}
            for e in aggregate(report)]
