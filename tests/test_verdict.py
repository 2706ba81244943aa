"""report.verdict on constructed per-seed results: a win only beyond the seed spread (min A > max B, >= 2 seeds each),
ties on overlapping ranges, no win on a single seed, and the summary built from the pairs."""
from __future__ import annotations

import statistics

from sdae_suite.report.verdict import BEATS, ONE_SEED, TIE, verdict

KNN, SEG = 'k-NN top-1', 'linear-seg mIoU'


def _pair(v: dict, metric: str, a: str, b: str) -> dict:
    m = next(m for m in v['metrics'] if m['metric'] == metric)
    return next(p for p in m['pairs'] if {p['a'], p['b']} == {a, b})


def test_clear_win_three_seeds_each():
    v = verdict({'random init': {KNN: [20.0, 22.0, 21.0]}, 'sdae': {KNN: [60.0, 61.0, 59.0]}}, 'random init')
    m = v['metrics'][0]
    assert [r['init'] for r in m['ranking']] == ['sdae', 'random init']
    assert m['ranking'][0] | {'values': None} == {'init': 'sdae', 'mean': 60.0, 'std': 1.0, 'n': 3, 'min': 59.0,
                                                   'max': 61.0, 'values': None}
    p = _pair(v, KNN, 'sdae', 'random init')
    assert (p['outcome'], p['winner'], p['margin']) == (BEATS, 'sdae', 39.0)
    assert p['line'] == 'sdae beats random init beyond the seed spread (min 59.00 > max 22.00)'
    assert v['lines'][0] == 'k-NN top-1: 1. sdae 60.00 ± 1.00 (n=3), 2. random init 21.00 ± 1.00 (n=3)'
    assert v['summary'] == {'sdae': {KNN: 'yes'}}
    assert v['summary_line'] == 'Verdict: random init is beaten beyond the seed spread on k-NN top-1 — k-NN top-1: ' \
                                'sdae yes.'


def test_overlapping_ranges_are_a_tie_even_with_a_higher_mean():
    v = verdict({'mae': {KNN: [30.0, 40.0, 50.0]}, 'random init': {KNN: [35.0, 36.0, 37.0]}}, 'random init')
    p = _pair(v, KNN, 'mae', 'random init')
    assert p['a'] == 'mae' and p['outcome'] == TIE and p['winner'] is None
    assert p['line'] == 'mae vs random init: tie (seed ranges overlap: 30.00–50.00 and 35.00–37.00)'
    assert v['summary'] == {'mae': {KNN: 'no (tie)'}}
    assert v['summary_line'].startswith('Verdict: no init beats random init beyond the seed spread on any metric — ')


def test_touching_ranges_tie_and_the_baseline_may_win():
    # min A == max B is no win: the seed ranges share a value.
    v = verdict({'sdae': {KNN: [50.0, 52.0]}, 'random init': {KNN: [48.0, 50.0]}, 'mae': {KNN: [10.0, 11.0]}},
                'random init')
    assert _pair(v, KNN, 'sdae', 'random init')['outcome'] == TIE
    assert v['summary']['mae'][KNN] == 'no (random init beats it beyond the seed spread)'
    assert [r['init'] for r in v['metrics'][0]['ranking']] == ['sdae', 'random init', 'mae']


def test_one_seed_claims_no_win_and_says_spread_unknown():
    v = verdict({'sdae': {KNN: [70.0]}, 'random init': {KNN: [20.0, 21.0, 22.0]}}, 'random init')
    p = _pair(v, KNN, 'sdae', 'random init')
    assert p['outcome'] == ONE_SEED and p['winner'] is None
    assert p['line'] == 'one seed only: sdae above random init by 49.00, spread unknown'
    assert v['summary'] == {'sdae': {KNN: 'no (one seed only, spread unknown)'}}
    assert 'beaten' not in v['summary_line'] and 'no init beats random init' in v['summary_line']
    assert v['lines'][0] == 'k-NN top-1: 1. sdae 70.00 (n=1), 2. random init 21.00 ± 1.00 (n=3)'


def test_equal_values():
    v = verdict({'sdae': {KNN: [40.0, 40.0, 40.0]}, 'random init': {KNN: [40.0, 40.0, 40.0]}}, 'random init')
    p = _pair(v, KNN, 'sdae', 'random init')
    assert p['outcome'] == TIE and p['margin'] == 0.0
    one = verdict({'sdae': {KNN: [40.0]}, 'random init': {KNN: [40.0]}}, 'random init')
    assert _pair(one, KNN, 'sdae', 'random init')['line'] == \
        'one seed only: sdae and random init equal (40.00), spread unknown'


def test_mixed_metrics_and_summary_sentence():
    values = {'random init': {KNN: [20.0, 21.0, 22.0], SEG: [10.0, 14.0, 12.0], 'COCO AP^box': [1.0]},
              'sdae': {KNN: [60.0, 61.0, 62.0], SEG: [13.0, 15.0, 11.0], 'COCO AP^box': [2.5]},
              'mae': {KNN: [19.0, 21.5, 23.0], SEG: [30.0, 31.0, 35.0]}}
    v = verdict(values, 'random init', [KNN, 'linear top-1', SEG, 'COCO AP^box'])
    assert [m['metric'] for m in v['metrics']] == [KNN, SEG, 'COCO AP^box']  # no value: no ranking
    assert v['summary'] == {'sdae': {KNN: 'yes', SEG: 'no (tie)', 'COCO AP^box': 'no (one seed only, spread unknown)'},
                            'mae': {KNN: 'no (tie)', SEG: 'yes'}}
    assert v['summary_line'] == (
        'Verdict: random init is beaten beyond the seed spread on k-NN top-1 and linear-seg mIoU — k-NN top-1: sdae '
        'yes, mae no (tie); linear-seg mIoU: sdae no (tie), mae yes; COCO AP^box: sdae no (one seed only, spread '
        'unknown).')
    assert v['lines'][-1] == v['summary_line']
    seg = next(m for m in v['metrics'] if m['metric'] == SEG)
    assert seg['ranking'][0]['mean'] == statistics.fmean([30.0, 31.0, 35.0])
    assert [(p['a'], p['b'], p['outcome']) for p in seg['pairs']] == [
        ('mae', 'sdae', BEATS), ('mae', 'random init', BEATS), ('sdae', 'random init', TIE)]


def test_no_baseline_and_non_finite_values():
    v = verdict({'sdae': {KNN: [1.0, float('nan'), 3.0]}, 'mae': {KNN: [5.0, 6.0]}})
    assert v['metrics'][0]['ranking'][1]['values'] == [1.0, 3.0]
    assert v['summary'] == {} and v['summary_line'] == 'Verdict: no baseline init (random init) to compare against.'
    assert verdict({})['lines'] == []
