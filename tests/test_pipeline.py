"""`make demo`'s pipeline end to end at tiny budgets, killed with SIGKILL twice (in pretraining, in fine-tuning) and
resumed: finished stages are not recomputed, interrupted ones continue from their checkpoint, the report is complete."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _start(work: Path, data: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, 'tools/run_benchmark.py', '--preset', 'demo', '--work-dir', str(work),
           '--data-root', str(data), '--inits', 'sdae', 'random']
    env = {**os.environ, 'SDAE_DEMO_BUDGET': 'tiny'}
    # A new session so that the kill reaches every process of the pipeline, as a closed terminal or an OOM kill would.
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open('w'), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill_when_recorded(proc: subprocess.Popen, work_dir: Path, checkpoint: str, timeout: float = 600) -> None:
    """SIGKILL the whole pipeline once mmengine has recorded ``checkpoint`` as the latest of ``work_dir`` (the record,
    not the file, is what ``--resume`` reads)."""
    record = work_dir / 'last_checkpoint'
    t0 = time.time()
    while not (record.is_file() and record.read_text().strip().endswith(checkpoint)):
        assert proc.poll() is None, f'pipeline ended (rc {proc.returncode}) before {checkpoint} was recorded'
        assert time.time() - t0 < timeout, f'{checkpoint} was not recorded in {record} within {timeout} s'
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _stages_run(log: Path) -> list[str]:
    return re.findall(r'^\[benchmark\] stage \d+/\d+: (\S+)', log.read_text(), flags=re.M)


def test_tiny_demo_survives_two_kills_and_reports(tmp_path):
    work, data = tmp_path / 'work', tmp_path / 'data'
    logs = [tmp_path / f'run{i}.log' for i in range(3)]

    # 1) killed during pretraining, right after its first epoch checkpoint
    _kill_when_recorded(_start(work, data, logs[0]), work / 'pretrain_sdae', 'epoch_1.pth')
    data_marker = work / 'stages' / 'data.done'
    assert data_marker.is_file() and not (work / 'stages' / 'pretrain-sdae.done').exists()
    data_mtime = data_marker.stat().st_mtime_ns

    # 2) resumed, then killed during fine-tuning, after the first fine-tuning checkpoint
    _kill_when_recorded(_start(work, data, logs[1]), work / 'finetune' / 'det_sdae_seed0', 'iter_2.pth')
    text = logs[1].read_text()
    assert _stages_run(logs[1])[0] == 'pretrain-sdae', 'the finished data stage was run again'
    assert 'resumed epoch: 1' in text, 'pretraining did not resume from its epoch-1 checkpoint'
    assert (work / 'stages' / 'export-sdae.done').is_file()

    # 3) runs to the end
    proc = _start(work, data, logs[2])
    assert proc.wait(timeout=900) == 0, logs[2].read_text()[-3000:]
    text = logs[2].read_text()
    assert _stages_run(logs[2])[0] == 'det-sdae-seed0', 'finished stages were run again'
    assert re.search(r'resumed epoch: \d+, iter: 2', text), 'fine-tuning did not resume from its iter-2 checkpoint'
    assert data_marker.stat().st_mtime_ns == data_mtime

    for run in ['det_sdae_seed0', 'det_random_seed0', 'seg_sdae_seed0', 'seg_random_seed0']:
        status = json.loads((work / 'finetune' / run / 'run_status.json').read_text())
        assert status['status'] == 'finished', (run, status)
        results = json.loads((work / 'finetune' / run / 'test_results.json').read_text())
        assert results['status'] == 'ok'
        key = 'coco/bbox_mAP' if run.startswith('det') else 'mIoU'
        assert isinstance(results['metrics'][key], float)
    # ImageNet-protocol classification on the pool's class folders: fine-tuning and linear probing from each init
    for run in ['cls_ft_sdae_seed0', 'cls_ft_random_seed0', 'cls_linear_sdae_seed0', 'cls_linear_random_seed0']:
        status = json.loads((work / 'finetune' / run / 'run_status.json').read_text())
        assert status['status'] == 'finished', (run, status)
        results = json.loads((work / 'finetune' / run / 'test_results.json').read_text())
        assert results['status'] == 'ok' and results['task'] == run.rsplit('_', 2)[0]
        top1, top5 = results['metrics']['accuracy/top1'], results['metrics']['accuracy/top5']
        assert 0.0 <= top1 <= top5 <= 100.0, results['metrics']
    sdae_meta = json.loads((work / 'finetune' / 'det_sdae_seed0' / 'run_status.json').read_text())['pretrained_meta']
    assert sdae_meta['method'] == 'sdae' and sdae_meta['branch'] == 'student'

    report = work / 'report'
    assert (report / 'report.html').stat().st_size > 10_000
    md = (report / 'report.md').read_text()
    assert 'random init (baseline)' in md and 'sdae 2ep student' in md
    assert all((report / name).is_file() for name in ('results.json', 'results.csv', 'plots/pretrain_loss.png'))

    # Frozen-feature probes of the exported encoder and of random init (its architecture), 3 seeds each; the report
    # opens with the inits ranked on them and on fine-tuning, and the verdict.
    probes = work / 'probes'
    assert sorted(p.relative_to(probes).as_posix() for p in probes.glob('*/*_seed*.json')) == sorted(
        f'{row}/{p}_seed{s}.json' for row in ('random_init', 'sdae') for p in ('knn', 'linear', 'seg')
        for s in range(3))
    rnd = json.loads((probes / 'random_init' / 'knn_seed1.json').read_text())
    assert rnd['arch'] == json.loads((probes / 'sdae' / 'knn_seed1.json').read_text())['arch']
    assert md.splitlines()[2] == '## Ranking and verdict'
    # the verdict's one-line summary, then its table (init x metric), then the ranking per metric, then the results
    assert md.index('**Verdict:** ') < md.index('| init vs random init |') < md.index('**k-NN top-1**: 1. ') < md.index(
        '## Results')
    res = json.loads((report / 'results.json').read_text())
    assert sorted((r['init'], r['n']) for r in res['ranking']['linear-seg mIoU']) == [
        ('random init', 3), ('sdae 2ep student', 3)]
    assert [(r['init'], r['n']) for r in res['ranking']['COCO AP^box']][-1][1] == 1
    ranked_ft = sorted(r['init'] for r in res['ranking']['fine-tune top-1 (demo pool)'])
    assert ranked_ft == ['random init', 'sdae 2ep student']
    assert 'linear-probe top-1 (demo pool)' in res['ranking']
    assert res['verdict']['baseline'] == 'random init' and res['verdict']['summary_line'].startswith('Verdict: ')

    # Pictures: the encoders' attention / PCA maps and the fine-tunes' predictions side by side, embedded in the html.
    features = json.loads((work / 'visuals' / 'features' / 'visuals.json').read_text())
    assert [r['name'] for r in features['rows']] == ['sdae 2ep student', 'random init']
    predictions = json.loads((work / 'visuals' / 'predictions' / 'visuals.json').read_text())
    assert [f['file'] for f in predictions['figures']] == ['predictions_det.png', 'predictions_seg.png']
    assert sorted((r['task'], r['label']) for r in predictions['runs']) == [
        ('det', 'random init'), ('det', 'sdae 2ep student'), ('seg', 'random init'), ('seg', 'sdae 2ep student')]
    assert '![COCO (Mask R-CNN): predictions side by side](visuals/' in md
    pictures = _pictures_in_browser(report / 'report.html')
    assert len(pictures) == 4  # attention, PCA, det and seg predictions
    assert all(natural > 0 and shown > 0 and visible for natural, shown, visible in pictures), pictures

    # TensorBoard: every training run (pretraining and fine-tuning) wrote event files holding the scalars it logged.
    for run in (work / 'pretrain_sdae', work / 'finetune' / 'det_random_seed0', work / 'finetune' / 'seg_sdae_seed0'):
        _assert_tensorboard_matches_scalars(run)


def _pictures_in_browser(page_file: Path) -> list[tuple[int, float, bool]]:
    """(naturalWidth, rendered width, visible) of every embedded picture, as headless Chromium shows the page."""
    from playwright.sync_api import sync_playwright
    from test_report import CHROMIUM, CHROMIUM_ARGS  # tests/ is on sys.path (pytest rootdir import mode)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS[1:], headless=True)
        page = browser.new_page(viewport={'width': 1280, 'height': 800})
        page.goto(page_file.as_uri(), wait_until='load')
        out = page.eval_on_selector_all('figure.visual img', '''els => els.map(e => [e.naturalWidth,
            e.getBoundingClientRect().width, getComputedStyle(e).visibility === 'visible'])''')
        browser.close()
    return [tuple(x) for x in out]


def _assert_tensorboard_matches_scalars(run: Path) -> None:
    """The newest session of ``run`` has TensorBoard event files, and tensorboard's own reader finds in them every
    number of that session's scalars.json (mmengine's log) at the same step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sessions = sorted(p.parent for p in run.glob('*/vis_data/scalars.json'))
    assert sessions, f'{run}: no vis_data/scalars.json'
    vis = sessions[-1]
    assert list(vis.glob('events.out.tfevents.*')), f'{vis}: no TensorBoard event file'
    logged: dict[str, dict[int, float]] = {}
    for line in (vis / 'scalars.json').read_text().splitlines():
        rec = json.loads(line)
        for k, v in rec.items():
            if k != 'step' and isinstance(v, (int, float)):
                logged.setdefault(k, {})[rec['step']] = float(v)
    assert logged, f'{vis}/scalars.json logged no number'
    acc = EventAccumulator(str(vis))
    acc.Reload()
    for key, by_step in logged.items():
        assert key in acc.Tags()['scalars'], (vis, key, acc.Tags()['scalars'])
        read = {e.step: e.value for e in acc.Scalars(key)}
        for step, value in by_step.items():
            assert abs(read[step] - value) <= 1e-5 * max(1.0, abs(value)), (vis, key, step, read[step], value)
