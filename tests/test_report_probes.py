"""The benchmark report's frozen-feature probe table (mean ± std over seeds, beside fine-tuning) and the
probe-vs-pretraining-epoch plot."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from test_report import DET, backbone_meta, coco_metrics, make_run

from tools import benchmark_report


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

    from report.probes import probe_curves
    from report.runs import read_run
    curves = probe_curves(read_run(pre, 1e9))
    assert curves['probe/knn_top1'] == [(2, 30.0), (4, 41.0), (6, 50.0)]  # one point per epoch, resumed session wins


def test_probe_results_alone_make_a_report(tmp_path, capsys):
    probe_result(tmp_path / 'probes', 'random init', None, 'linear', 0, {'top1': 33.0, 'train_top1': 40.0})
    out = tmp_path / 'report'
    assert benchmark_report.main([str(tmp_path / 'probes'), '--out', str(out)]) == 0
    assert 'no run dir found' not in capsys.readouterr().err
    assert '| random init | — | 33.00 | — | 0 |' in (out / 'report.md').read_text()
