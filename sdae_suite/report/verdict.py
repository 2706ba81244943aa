"""Ranking of the inits and the verdict the numbers allow, per metric and per pair of inits.

A win is claimed only beyond the seed spread: every seed of A above every seed of B (min A > max B), with at least 2
seeds on each side. Overlapping ranges are a tie; a side with one seed has no known spread, so its lead is reported
but never called a win. Every metric here is higher-is-better (top-1, mIoU, AP in percent).

Against the baseline each init gets, per metric, a :class:`~sdae_suite.report.model.VerdictCell` (win / tie / loss /
one seed, with the margin): the report shows them as one table under a one-line summary.

Pure: ``verdict({init: {metric: [value per seed]}}, baseline)`` -> structured results and the report's lines.
"""
from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

from sdae_suite.contracts import RANDOM_INIT
from sdae_suite.report.model import LOSS, WIN, VerdictCell, VerdictTable
from sdae_suite.report.model import ONE_SEED as ONE_SEED_CELL
from sdae_suite.report.model import TIE as TIE_CELL
from sdae_suite.report.probes import COLUMNS, aggregate
from sdae_suite.report.runs import METRIC_BY_NAME, column_title

if TYPE_CHECKING:
    from sdae_suite.report.model import Report

BEATS, TIE, ONE_SEED = 'beats', 'tie', 'one seed'
# Fine-tuning metrics ranked: the headline one of each task, named by its column title, apart from the probes'
# ('ADE mIoU' vs 'linear-seg mIoU', 'IN-1K linear-probe top-1' vs the probe's 'linear top-1').
FINETUNE = [('det', 'bbox_AP'), ('seg', 'mIoU'), ('cls_ft', 'ft_top1'), ('cls_linear', 'lin_top1')]
RULE = ('Inits ranked by their mean over seeds (± std, n = seeds). A beats B only beyond the seed spread: every seed '
        'of A above every seed of B, with at least 2 seeds each; overlapping seed ranges are a tie; with a single seed '
        'on either side the spread is unknown and no win is claimed.')


def _stats(values: list[float]) -> dict[str, Any]:
    return {'mean': statistics.fmean(values), 'std': statistics.stdev(values) if len(values) > 1 else None,
            'n': len(values), 'min': min(values), 'max': max(values), 'values': list(values)}


def _fmt(s: dict[str, Any]) -> str:
    return f'{s["mean"]:.2f}' + (f' ± {s["std"]:.2f}' if s['std'] is not None else '') + f' (n={s["n"]})'


def compare(a: str, sa: dict[str, Any], b: str, sb: dict[str, Any]) -> dict[str, Any]:
    """One pair on one metric; `a` is the higher (or equal) mean. -> {'a', 'b', 'outcome', 'winner', 'margin',
    'line'}; winner is None unless the outcome is BEATS."""
    margin = sa['mean'] - sb['mean']
    if sa['n'] < 2 or sb['n'] < 2:
        outcome, winner = ONE_SEED, None
        line = (f'one seed only: {a} and {b} equal ({sa["mean"]:.2f}), spread unknown' if margin == 0 else
                f'one seed only: {a} above {b} by {margin:.2f}, spread unknown')
    elif sa['min'] > sb['max']:
        outcome, winner = BEATS, a
        line = f'{a} beats {b} beyond the seed spread (min {sa["min"]:.2f} > max {sb["max"]:.2f})'
    else:
        outcome, winner = TIE, None
        line = f'{a} vs {b}: tie (seed ranges overlap: {sa["min"]:.2f}–{sa["max"]:.2f} and ' \
               f'{sb["min"]:.2f}–{sb["max"]:.2f})'
    return {'a': a, 'b': b, 'outcome': outcome, 'winner': winner, 'margin': margin, 'line': line}


def _cell(init: str, pair: dict[str, Any], stats: dict[str, dict[str, Any]], base: str) -> VerdictCell:
    """`init` against the baseline on one metric, as the verdict table shows it."""
    if pair['outcome'] == BEATS:
        outcome = WIN if pair['winner'] == init else LOSS
    else:
        outcome = TIE_CELL if pair['outcome'] == TIE else ONE_SEED_CELL
    return VerdictCell(outcome, stats[init]['mean'] - stats[base]['mean'], stats[init]['n'], stats[base]['n'])


def _plural(n: int, word: str) -> str:
    return f'{n} {word}' if n == 1 else f'{n} {word}es' if word.endswith('s') else f'{n} {word}s'


def _against(init: str, base: str, pair: dict[str, Any]) -> str:
    """`init` against the baseline on one metric, for the summary: 'yes' or 'no (why)'."""
    if pair['outcome'] == BEATS:
        return 'yes' if pair['winner'] == init else f'no ({base} beats it beyond the seed spread)'
    if pair['outcome'] == TIE:
        return 'no (tie)'
    return 'no (one seed only, spread unknown)'


def verdict(values: dict[str, dict[str, list[float]]], baseline: str | None = None,
            metrics: list[str] | None = None) -> dict[str, Any]:
    """values: {init: {metric: [one value per seed]}} (non-finite values are dropped); baseline: the init the others
    must beat (random init); metrics: their order (default: first appearance).

    -> {'baseline', 'metrics': [{'metric', 'ranking': [{'init', 'mean', 'std', 'n', 'min', 'max', 'values'}],
    'pairs': [compare(...)], 'line': the ranking}], 'summary': {init: {metric: 'yes' | 'no (...)'}}, 'table':
    VerdictTable (None without a baseline), 'summary_line', 'lines': all of it as text, one line each}."""
    order = list(metrics or dict.fromkeys(m for per in values.values() for m in per))
    out: dict[str, Any] = {'baseline': baseline, 'metrics': [], 'summary': {}, 'table': None, 'summary_line': None,
                           'lines': []}
    table = VerdictTable(baseline, [], [], {}) if baseline is not None else None
    for metric in order:
        stats = {init: _stats(vals) for init, per in values.items()
                 if (vals := [float(v) for v in per.get(metric, []) if math.isfinite(v)])}
        if not stats:
            continue
        # Ties in the mean keep the inits' given order: the ranking must not depend on dict accidents.
        ranked = sorted(stats, key=lambda i: -stats[i]['mean'])
        pairs = [compare(a, stats[a], b, stats[b]) for k, a in enumerate(ranked) for b in ranked[k + 1:]]
        line = ', '.join(f'{k + 1}. {i} {_fmt(stats[i])}' for k, i in enumerate(ranked))
        out['metrics'].append({'metric': metric, 'ranking': [{'init': i, **stats[i]} for i in ranked],
                               'pairs': pairs, 'line': line})
        out['lines'] += [f'{metric}: {line}'] + [f'- {p["line"]}' for p in pairs]
        if baseline in stats and table is not None:
            for pair in pairs:
                if baseline in (pair['a'], pair['b']):
                    other = pair['b'] if pair['a'] == baseline else pair['a']
                    out['summary'].setdefault(other, {})[metric] = _against(other, baseline, pair)
                    table.cells.setdefault(other, {})[metric] = _cell(other, pair, stats, baseline)
            if len(stats) > 1:
                table.metrics.append(metric)
    if baseline is None or not out['summary']:
        if out['metrics']:
            out['summary_line'] = (f'Verdict: no comparison with {baseline}: it has no value on these metrics.'
                                   if baseline else 'Verdict: no baseline init (random init) to compare against.')
    else:
        table.inits = [i for i in values if i in table.cells]  # the caller's order, not the first metric's ranking
        out['table'] = table
        won = [m for m in table.metrics if any(getattr(table.cells[i].get(m), 'outcome', None) == WIN
                                               for i in table.inits)]
        head = (f'{baseline} is beaten beyond the seed spread on {_join(won)}' if won else
                f'no init beats {baseline} beyond the seed spread on any metric')
        tallies = []
        for i in table.inits:
            c = table.counts(i)
            tallies.append(f'{i} {_plural(c[WIN], "win")}, {_plural(c[TIE_CELL], "tie")}, {_plural(c[LOSS], "loss")}'
                           + (f', {c[ONE_SEED_CELL]} with one seed' if c[ONE_SEED_CELL] else ''))
        out['summary_line'] = f'Verdict: {head}; against it: ' + '; '.join(tallies) + '.'
    if out['summary_line']:
        out['lines'].append(out['summary_line'])
    return out


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ', '.join(items[:-1]) + ' and ' + items[-1]


def init_values(report: Report) -> tuple[dict[str, dict[str, list[float]]], list[str]]:
    """({init: {metric: [value per seed]}}, metric order) from the report's probe results and its measured fine-tuning
    rows. A checkpoint's probe rows take its fine-tuning row's name (report.probes.aggregate), so each init is one
    key; each ok fine-tuning run is one seed."""
    values: dict[str, dict[str, list[float]]] = {}
    for e in aggregate(report):
        for label, vals in e['per_seed'].items():
            values.setdefault(e['name'], {})[label] = vals
    titles = {name: column_title(METRIC_BY_NAME[name], report.recipes.get(task, [])) for task, name in FINETUNE}
    for row in report.rows:
        if row.source != 'measured':
            continue
        for task, name in FINETUNE:
            cell = row.cells.get(task)
            runs = [r for r in (cell.runs if cell else []) if r.state == 'ok' and r.metrics.get(name) is not None]
            if runs:
                values.setdefault(row.name, {})[titles[name]] = [float(r.metrics[name]) for r in runs]
    order = [label for _, _, label in COLUMNS] + [titles[n] for _, n in FINETUNE]
    return values, order


def report_verdict(report: Report) -> dict[str, Any]:
    """The verdict of a report (report.compare.make_report's dict): its baseline row is the init to beat; without one
    (probe results alone), the probes' random init."""
    values, order = init_values(report)
    base = report.baseline or (RANDOM_INIT if RANDOM_INIT in values else None)
    return verdict(values, base, order)
