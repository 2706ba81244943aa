"""report.verdict on constructed per-seed results: a win only beyond the seed spread (min A > max B, >= 2 seeds each),
ties on overlapping ranges, no win on a single seed, and the summary built from the pairs."""
from __future__ import annotations

import statistics

import pytest

from sdae_suite.report.model import VerdictCell
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
    assert v['summary_line'] == 'Verdict: random init is beaten beyond the seed spread on k-NN top-1; against it: ' \
                                'sdae 1 win, 0 ties, 0 losses.'
    t = v['table']
    assert (t.baseline, t.metrics, t.inits) == ('random init', [KNN], ['sdae'])
    assert t.cells['sdae'][KNN] == VerdictCell('win', 39.0, 3, 3) and t.cells['sdae'][KNN].text == 'win +39.00'


def test_overlapping_ranges_are_a_tie_even_with_a_higher_mean():
    v = verdict({'mae': {KNN: [30.0, 40.0, 50.0]}, 'random init': {KNN: [35.0, 36.0, 37.0]}}, 'random init')
    p = _pair(v, KNN, 'mae', 'random init')
    assert p['a'] == 'mae' and p['outcome'] == TIE and p['winner'] is None
    assert p['line'] == 'mae vs random init: tie (seed ranges overlap: 30.00–50.00 and 35.00–37.00)'
    assert v['summary'] == {'mae': {KNN: 'no (tie)'}}
    assert v['summary_line'] == ('Verdict: no init beats random init beyond the seed spread on any metric; against it: '
                                 'mae 0 wins, 1 tie, 0 losses.')
    assert v['table'].cells['mae'][KNN].text == 'tie +4.00'  # the higher mean, but no win


def test_touching_ranges_tie_and_the_baseline_may_win():
    # min A == max B is no win: the seed ranges share a value.
    v = verdict({'sdae': {KNN: [50.0, 52.0]}, 'random init': {KNN: [48.0, 50.0]}, 'mae': {KNN: [10.0, 11.0]}},
                'random init')
    assert _pair(v, KNN, 'sdae', 'random init')['outcome'] == TIE
    assert v['summary']['mae'][KNN] == 'no (random init beats it beyond the seed spread)'
    assert v['table'].cells['mae'][KNN] == VerdictCell('loss', -38.5, 2, 2)
    assert v['table'].cells['mae'][KNN].text == 'loss -38.50' and v['table'].cells['sdae'][KNN].text == 'tie +2.00'
    assert [r['init'] for r in v['metrics'][0]['ranking']] == ['sdae', 'random init', 'mae']


def test_one_seed_claims_no_win_and_says_spread_unknown():
    v = verdict({'sdae': {KNN: [70.0]}, 'random init': {KNN: [20.0, 21.0, 22.0]}}, 'random init')
    p = _pair(v, KNN, 'sdae', 'random init')
    assert p['outcome'] == ONE_SEED and p['winner'] is None
    assert p['line'] == 'one seed only: sdae above random init by 49.00, spread unknown'
    assert v['summary'] == {'sdae': {KNN: 'no (one seed only, spread unknown)'}}
    assert v['table'].cells['sdae'][KNN] == VerdictCell('one seed', 49.0, 1, 3)
    assert v['table'].cells['sdae'][KNN].text == '1 seed +49.00'  # a lead, never called a win
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
        'Verdict: random init is beaten beyond the seed spread on k-NN top-1 and linear-seg mIoU; against it: sdae 1 '
        'win, 1 tie, 0 losses, 1 with one seed; mae 1 win, 1 tie, 0 losses.')
    assert v['lines'][-1] == v['summary_line']
    # The verdict table: inits in the caller's order, the metrics the baseline has, no cell where one side lacks it.
    t = v['table'].to_json()
    assert t['metrics'] == [KNN, SEG, 'COCO AP^box'] and [r['init'] for r in t['rows']] == ['sdae', 'mae']
    assert {m: c['text'] for m, c in t['rows'][0]['cells'].items()} == {
        KNN: 'win +40.00', SEG: 'tie +1.00', 'COCO AP^box': '1 seed +1.50'}
    assert {m: c['text'] for m, c in t['rows'][1]['cells'].items()} == {KNN: 'tie +0.17', SEG: 'win +20.00'}
    assert t['rows'][1]['cells'][SEG] | {'margin': None} == {'outcome': 'win', 'margin': None, 'text': 'win +20.00',
                                                              'n': 3, 'n_baseline': 3}
    assert t['rows'][1]['cells'][SEG]['margin'] == pytest.approx(20.0)
    assert t['rows'][0]['counts'] == {'win': 1, 'tie': 1, 'loss': 0, 'one seed': 1}
    seg = next(m for m in v['metrics'] if m['metric'] == SEG)
    assert seg['ranking'][0]['mean'] == statistics.fmean([30.0, 31.0, 35.0])
    assert [(p['a'], p['b'], p['outcome']) for p in seg['pairs']] == [
        ('mae', 'sdae', BEATS), ('mae', 'random init', BEATS), ('sdae', 'random init', TIE)]


def test_no_baseline_and_non_finite_values():
    v = verdict({'sdae': {KNN: [1.0, float('nan'), 3.0]}, 'mae': {KNN: [5.0, 6.0]}})
    assert v['metrics'][0]['ranking'][1]['values'] == [1.0, 3.0]
    assert v['summary'] == {} and v['summary_line'] == 'Verdict: no baseline init (random init) to compare against.'
    assert v['table'] is None
    assert verdict({})['lines'] == []
