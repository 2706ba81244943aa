"""The benchmark report's frozen-feature probe table (mean ± std over seeds, beside fine-tuning) and the
probe-vs-pretraining-epoch plot."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from test_report import DET, SEG, backbone_meta, coco_metrics, make_run

from sdae_suite.commands import benchmark_report


def probe_result(out: Path, name: str, ckpt: str | None, probe: str, seed: int, metrics: dict) -> None:
    f = out / name.replace(' ', '_') / f'{probe}_seed{seed}.json'
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({'format': 'sdae-suite/probe-result', 'probe': probe, 'name': name, 'checkpoint': ckpt,
                             'seed': seed, 'metrics': metrics}))


def test_probe_table_mean_std_beside_finetuning_and_probe_curves(tmp_path, capsys):
    root = tmp_path / 'work'
    ckpt = tmp_path / 'ckpts' / 'mae.pth'
    ckpt.parent.mkdir()
    ckpt.write_bytes(b'x')
    make_run(root / 'mae' / 'det', 'det', DET, ckpt=str(ckpt), meta=backbone_meta('mae'),
             metrics=coco_metrics(0.3, 0.2))
    knn = {'random init': [20.0, 22.0, 21.0], 'mae_file_name': [60.0, 60.0, 60.0]}
    seg = {'random init': [10.0, 12.0, 14.0], 'mae_file_name': [30.0, 31.0, 35.0]}
    for name, path in (('random init', None), ('mae_file_name', str(ckpt))):
        for seed in range(3):
            probe_result(root / 'probes', name, path, 'knn', seed, {'top1': knn[name][seed]})
            probe_result(root / 'probes', name, path, 'seg', seed, {'mIoU': seg[name][seed], 'mAcc': 1, 'aAcc': 2})
    (root / 'probes' / 'broken').mkdir()
    (root / 'probes' / 'broken' / 'knn_seed0.json').write_text('{"format": "sdae-suite/probe-re')  # cut mid-write
    # A pretraining run with ProbeHook lines, resumed: the second session repeats epoch 4 (it wins) and adds 6.
    pre = make_run(root / 'mae' / 'pretrain', 'pretrain', 'mae_vit_demo', epochs=3)
    log = pre / '20261126_100000' / 'vis_data' / 'scalars.json'
    log.write_text(log.read_text() + ''.join(json.dumps({'probe/knn_top1': v, 'probe/seg_mIoU': v / 2,
                                                         'probe/time_s': 1.0, 'epoch': e, 'step': 5 * e}) + '\n'
                                             for e, v in ((2, 30.0), (4, 40.0))))
    log2 = pre / '20261126_110000' / 'vis_data' / 'scalars.json'
    log2.parent.mkdir(parents=True)
    log2.write_text(''.join(json.dumps({'probe/knn_top1': v, 'probe/seg_mIoU': v / 2, 'epoch': e,
                                        'step': 5 * e}) + '\n' for e, v in ((4, 41.0), (6, 50.0))))

    out = tmp_path / 'report'
    assert benchmark_report.main([str(root), '--out', str(out)]) == 0
    err = capsys.readouterr().err
    assert 'broken/knn_seed0.json: unreadable probe result' in err
    md = (out / 'report.md').read_text()
    table = md.split('## Frozen-feature probes')[1].split('\n## ')[0]
    assert md.index('## Results') < md.index('## Frozen-feature probes') < md.index('## Runs')
    sd = lambda v: statistics.stdev(v)  # noqa: E731
    # The checkpoint takes its fine-tuning row's name ('mae 300ep student'), not the probe file's.
    assert (f'| mae 300ep student | 60.00 ± 0.00 (n=3) | — | {statistics.fmean(seg["mae_file_name"]):.2f} ± '
            f'{sd(seg["mae_file_name"]):.2f} (n=3) | 0, 1, 2 |') in table
    assert f'| random init | 21.00 ± {sd(knn["random init"]):.2f} (n=3) | — | 12.00 ± 2.00 (n=3) | 0, 1, 2 |' in table
    res = json.loads((out / 'results.json').read_text())
    probes = {p['name']: p for p in res['probes']}
    assert probes['random init']['values']['k-NN top-1'] == {'mean': 21.0, 'std': 1.0, 'n': 3}
    assert (out / 'plots' / 'pretrain_probes.png').stat().st_size > 1000
    assert 'Frozen-feature probes during pretraining' in md

    from sdae_suite.report.probes import probe_curves
    from sdae_suite.report.runs import read_run
    curves = probe_curves(read_run(pre, 1e9))
    assert curves['probe/knn_top1'] == [(2, 30.0), (4, 41.0), (6, 50.0)]  # one point per epoch, resumed session wins


def test_probe_results_alone_make_a_report(tmp_path, capsys):
    probe_result(tmp_path / 'probes', 'random init', None, 'linear', 0, {'top1': 33.0, 'train_top1': 40.0})
    out = tmp_path / 'report'
    assert benchmark_report.main([str(tmp_path / 'probes'), '--out', str(out)]) == 0
    assert 'no run dir found' not in capsys.readouterr().err
    assert '| random init | — | 33.00 | — | 0 |' in (out / 'report.md').read_text()


def test_report_opens_with_the_ranking_and_the_verdict(tmp_path, capsys):
    """Probe results and fine-tuning runs of three inits: report.md, report.html and results.json start with the
    one-line verdict, the verdict table (each init against the baseline per metric), then the inits ranked on each
    metric with the pairwise verdicts, one row per init across probes and fine-tuning."""
    root = tmp_path / 'work'
    ckpts = {}
    for method in ('sdae', 'mae'):
        ckpts[method] = tmp_path / 'ckpts' / f'{method}.pth'
        ckpts[method].parent.mkdir(exist_ok=True)
        ckpts[method].write_bytes(b'x')
    box = {'sdae': [0.30, 0.32], 'mae': [0.20, 0.31], 'random init': [0.10, 0.12]}  # fractions, as CocoMetric
    miou = {'sdae': [40.0], 'random init': [20.0]}
    for init, path in (('sdae', ckpts['sdae']), ('mae', ckpts['mae']), ('random init', None)):
        meta = backbone_meta(init, epoch=6) if path else None
        ckpt = str(path) if path else None
        for seed, ap in enumerate(box[init]):
            make_run(root / 'finetune' / f'det_{init[:6]}_seed{seed}', 'det', DET, ckpt=ckpt, meta=meta,
                     metrics=coco_metrics(ap, ap / 2))
        for seed, v in enumerate(miou.get(init, [])):
            make_run(root / 'finetune' / f'seg_{init[:6]}_seed{seed}', 'seg', SEG, ckpt=ckpt, meta=meta,
                     metrics={'aAcc': 80.0, 'mIoU': v, 'mAcc': 50.0})
    knn = {'sdae': [60.0, 61.0, 62.0], 'mae': [20.5, 22.5, 30.0], 'random init': [20.0, 21.0, 22.0]}
    lin = {'sdae': [50.0, 50.0, 50.0], 'mae': [50.0, 50.0, 50.0], 'random init': [30.0, 31.0, 32.0]}
    seg = {'sdae': [20.0, 21.0, 22.0], 'mae': [12.0, 13.0, 14.0], 'random init': [10.0, 11.0, 12.0]}
    for init in knn:  # probe rows named as tools/run_benchmark.py names them (--name sdae=..., random init)
        ckpt = str(ckpts[init]) if init in ckpts else None
        for seed in range(3):
            probe_result(root / 'probes', init, ckpt, 'knn', seed, {'top1': knn[init][seed]})
            probe_result(root / 'probes', init, ckpt, 'linear', seed, {'top1': lin[init][seed]})
            probe_result(root / 'probes', init, ckpt, 'seg', seed, {'mIoU': seg[init][seed]})

    out = tmp_path / 'report'
    assert benchmark_report.main([str(root / 'finetune'), str(root / 'probes'), '--baseline', 'random',
                                  '--out', str(out)]) == 0
    capsys.readouterr()
    sd, mu = 'sdae 6ep student', 'mae 6ep student'  # the fine-tuning rows' names, taken by the probe rows too
    lines = (out / 'report.md').read_text().splitlines()
    summary = (f'Verdict: random init is beaten beyond the seed spread on k-NN top-1, linear top-1, linear-seg mIoU '
               f'and COCO AP^box; against it: {mu} 2 wins, 2 ties, 0 losses; {sd} 4 wins, 0 ties, 0 losses, 1 with one '
               f'seed.')
    assert lines[:10] == [
        '# Transfer benchmark report', '', '## Ranking and verdict', '', f'**Verdict:** {summary[len("Verdict: "):]}',
        '', '| init vs random init | k-NN top-1 | linear top-1 | linear-seg mIoU | COCO AP^box | ADE mIoU |',
        '|---|---|---|---|---|---|',
        f'| {mu} | tie +3.33 | win +19.00 | tie +2.00 | win +14.50 | — |',  # mae has no ADE run
        f'| {sd} | win +40.00 | win +19.00 | win +10.00 | win +20.00 | 1 seed +20.00 |']
    assert lines[11].startswith('Each cell: the init against random init, then its mean minus random init')
    lines = lines[lines.index('### Ranking per metric') + 2:]
    assert lines[:17] == [
        f'**k-NN top-1**: 1. {sd} 61.00 ± 1.00 (n=3), 2. {mu} 24.33 ± 5.01 (n=3), 3. random init 21.00 ± 1.00 (n=3)',
        f'- {sd} beats {mu} beyond the seed spread (min 60.00 > max 30.00)',
        f'- {sd} beats random init beyond the seed spread (min 60.00 > max 22.00)',
        f'- {mu} vs random init: tie (seed ranges overlap: 20.50–30.00 and 20.00–22.00)', '',
        # equal means keep the inits' order of appearance (probe result folders, sorted)
        f'**linear top-1**: 1. {mu} 50.00 ± 0.00 (n=3), 2. {sd} 50.00 ± 0.00 (n=3), 3. random init 31.00 ± 1.00 (n=3)',
        f'- {mu} vs {sd}: tie (seed ranges overlap: 50.00–50.00 and 50.00–50.00)',
        f'- {mu} beats random init beyond the seed spread (min 50.00 > max 32.00)',
        f'- {sd} beats random init beyond the seed spread (min 50.00 > max 32.00)', '',
        f'**linear-seg mIoU**: 1. {sd} 21.00 ± 1.00 (n=3), 2. {mu} 13.00 ± 1.00 (n=3), 3. random init 11.00 ± 1.00 '
        f'(n=3)',
        f'- {sd} beats {mu} beyond the seed spread (min 20.00 > max 14.00)',
        f'- {sd} beats random init beyond the seed spread (min 20.00 > max 12.00)',
        f'- {mu} vs random init: tie (seed ranges overlap: 12.00–14.00 and 10.00–12.00)', '',
        f'**COCO AP^box**: 1. {sd} 31.00 ± 1.41 (n=2), 2. {mu} 25.50 ± 7.78 (n=2), 3. random init 11.00 ± 1.41 (n=2)',
        f'- {sd} vs {mu}: tie (seed ranges overlap: 30.00–32.00 and 20.00–31.00)']
    assert lines[17:23] == [
        f'- {sd} beats random init beyond the seed spread (min 30.00 > max 12.00)',
        f'- {mu} beats random init beyond the seed spread (min 20.00 > max 12.00)', '',
        f'**ADE mIoU**: 1. {sd} 40.00 (n=1), 2. random init 20.00 (n=1)',
        f'- one seed only: {sd} above random init by 20.00, spread unknown', '']
    assert lines[23].startswith('Inits ranked by their mean over seeds')
    # The probe table has one row per init, under the fine-tuning rows' names.
    table = '\n'.join(lines).split('## Frozen-feature probes')[1].split('\n## ')[0]
    assert sorted(r.split(' | ')[0] for r in table.splitlines() if r.startswith('| ') and '---' not in r)[1:] == [
        f'| {mu}', '| random init', f'| {sd}']

    res = json.loads((out / 'results.json').read_text())
    assert list(res['ranking']) == ['k-NN top-1', 'linear top-1', 'linear-seg mIoU', 'COCO AP^box', 'ADE mIoU']
    assert [(r['init'], r['n'], r['values']) for r in res['ranking']['ADE mIoU']] == [
        (sd, 1, [40.0]), ('random init', 1, [20.0])]
    assert res['ranking']['k-NN top-1'][2] == {'init': 'random init', 'mean': 21.0, 'std': 1.0, 'n': 3, 'min': 20.0,
                                               'max': 22.0, 'values': [20.0, 21.0, 22.0]}
    v = res['verdict']
    assert v['baseline'] == 'random init' and v['summary_line'] == summary
    assert [r['init'] for r in v['table']['rows']] == [mu, sd] and v['table']['baseline'] == 'random init'
    assert v['table']['rows'][0]['cells']['COCO AP^box'] == {'outcome': 'win', 'margin': 14.5, 'text': 'win +14.50',
                                                             'n': 2, 'n_baseline': 2}
    assert 'ADE mIoU' not in v['table']['rows'][0]['cells']
    assert v['summary'][mu] == {'k-NN top-1': 'no (tie)', 'linear top-1': 'yes', 'linear-seg mIoU': 'no (tie)',
                                'COCO AP^box': 'yes'}
    assert [(p['a'], p['b'], p['outcome'], p['winner']) for p in v['pairs']['ADE mIoU']] == [
        (sd, 'random init', 'one seed', None)]

    page = (out / 'report.html').read_text()
    body = page.split('<body>')[1]
    assert body.startswith('\n<h1>Transfer benchmark report</h1>\n'
                           '<section class="verdict"><h2>Ranking and verdict</h2>')
    assert body.index('Verdict:</b> random init is beaten') < body.index('<table class="verdict">') < body.index(
        '<h3>Ranking per metric</h3>') < body.index('<h2>Results</h2>')
    assert f'<tr><td>{sd}</td><td class="win">win +40.00</td>' in body
    assert '<td class="one-seed">1 seed +20.00</td>' in body and '<td class="tie">tie +3.33</td>' in body
    assert '<b>COCO AP<sup>box</sup></b>' in body
