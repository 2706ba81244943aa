"""tools/benchmark_report.py on work dirs written here the way our tools and mmengine write them (contracts.py)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdae_suite.commands import benchmark_report
from sdae_suite.contracts import RunStatus
from sdae_suite.report.runs import read_scalars

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get('SDAE_CHROMIUM', '/usr/bin/chromium')
# Flags this machine needs (no sandbox as root, no GPU, nothing contacted).
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync']

DET, SEG = 'mask_rcnn_vit_demo', 'upernet_vit_demo'


def backbone_meta(method: str, epoch: int = 300) -> dict:
    return {'format': 'sdae-suite/backbone', 'version': 1, 'method': method, 'branch': 'student', 'epoch': epoch,
            'arch': {'img_size': 224, 'patch_size': 16, 'embed_dim': 768, 'depth': 12, 'num_heads': 12,
                     'mlp_ratio': 4.0},
            'config': f'pretrain/configs/{method}_vit_demo.py', 'git_commit': 'abc1234'}


def coco_metrics(box: float, mask: float) -> dict:
    out = {}
    for iou, ap in (('bbox', box), ('segm', mask)):
        out |= {f'coco/{iou}_mAP': ap, f'coco/{iou}_mAP_50': ap + 0.2, f'coco/{iou}_mAP_75': ap - 0.05,
                f'coco/{iou}_mAP_s': -1.0, f'coco/{iou}_mAP_m': ap - 0.1, f'coco/{iou}_mAP_l': ap + 0.1}
    return out


def make_run(work_dir: Path, kind: str, recipe: str, *, ckpt: str | None = None, meta: dict | None = None,
             status: str = 'finished', metrics: dict | None = None, error: str | None = None,
             epochs: int = 2, max_epochs: int | None = None, lr: float = 1e-4) -> Path:
    """A run dir as tools/train.py + tools/test.py + mmengine leave it."""
    work_dir.mkdir(parents=True)
    (work_dir / 'run_status.json').write_text(json.dumps(RunStatus(
        status=status, kind=kind, recipe=recipe, config=f'configs/{recipe}.py', pretrained=ckpt, pretrained_meta=meta,
        started='2026-11-26T10:00:00+00:00', ended=None if status == 'running' else '2026-11-26T10:05:00+00:00',
        error=error).to_json()))
    # The config as trained (Config.pretty_text style), saved by mmengine's visualizer next to the training log ...
    log = work_dir / '20261126_100000' / 'vis_data' / 'scalars.json'
    log.parent.mkdir(parents=True)
    (log.parent / 'config.py').write_text(
        f"train_cfg = dict(type='EpochBasedTrainLoop', max_epochs={max_epochs or epochs}, val_interval=1)\n"
        f"optim_wrapper = dict(optimizer=dict(type='AdamW', lr={lr}, betas=(0.9, 0.999)), clip_grad=None)\n"
        f"work_dir = '{work_dir}'\n")
    # ... and the one in the work dir, which tools/test.py's Runner overwrote without the training --cfg-options.
    (work_dir / f'{recipe}.py').write_text("train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=99)\n")
    lines, it = [], 0
    for ep in range(1, epochs + 1):
        for _ in range(5):
            it += 1
            lines.append({'lr': lr, 'data_time': 0.01, 'loss': 3.0 / it, 'loss_cls': 1.0 / it, 'time': 0.5,
                          'epoch': ep, 'iter': it, 'memory': 100, 'step': it})
        if kind == 'det':
            lines.append({'coco/bbox_mAP': 0.1 * ep, 'coco/segm_mAP': 0.08 * ep, 'data_time': 0.01, 'time': 0.2,
                          'step': ep})
        elif kind == 'seg':
            lines.append({'aAcc': 50.0 + ep, 'mIoU': 10.0 * ep, 'mAcc': 12.0 * ep, 'data_time': 0.01, 'time': 0.2,
                          'step': ep})
    log.write_text(''.join(json.dumps(x) + '\n' for x in lines))
    if metrics is not None:
        (work_dir / 'test_results.json').write_text(json.dumps({
            'task': kind, 'recipe': recipe, 'config': f'configs/{recipe}.py',
            'checkpoint': str(work_dir / f'epoch_{epochs}.pth'), 'pretrained': ckpt, 'pretrained_meta': meta,
            'metrics': metrics, 'time': '2026-11-26T10:06:00+00:00',
            'status': 'ok'}))
    return work_dir


def build_bench(root: Path) -> Path:
    """Good, seeded, failed, running, truncated and garbage runs of four inits under one folder."""
    sdae, mae, cae = 'ckpts/sdae_300ep.pth', 'ckpts/mae_300ep.pth', 'ckpts/cae.pth'
    ms, mm = backbone_meta('sdae'), backbone_meta('mae')
    make_run(root / 'sdae' / 'det_seed0', 'det', DET, ckpt=sdae, meta=ms, metrics=coco_metrics(0.412, 0.371))
    make_run(root / 'sdae' / 'det_seed1', 'det', DET, ckpt=sdae, meta=ms, metrics=coco_metrics(0.420, 0.375))
    make_run(root / 'sdae' / 'seg', 'seg', SEG, ckpt=sdae, meta=ms, metrics={'aAcc': 80.2, 'mIoU': 45.5, 'mAcc': 55.1})
    make_run(root / 'sdae' / 'pretrain', 'pretrain', 'sdae_vit_demo', epochs=3)
    make_run(root / 'random' / 'det', 'det', DET, metrics=coco_metrics(0.300, 0.270))
    make_run(root / 'random' / 'det_seed1', 'det', DET)  # trained, never tested
    make_run(root / 'random' / 'seg', 'seg', SEG, metrics={'aAcc': 70.0, 'mIoU': 30.0, 'mAcc': 40.0})
    make_run(root / 'mae' / 'det', 'det', DET, ckpt=mae, meta=mm, status='failed',
             error='Traceback (most recent call last):\nRuntimeError: loss is NaN at iter 7')
    make_run(root / 'mae' / 'seg', 'seg', SEG, ckpt=mae, meta=mm, status='running', epochs=3, max_epochs=12)
    # A checkpoint without our metadata, whose test result was cut mid-write.
    cae_seg = make_run(root / 'cae' / 'seg', 'seg', SEG, ckpt=cae, metrics={'aAcc': 1.0, 'mIoU': 1.0, 'mAcc': 1.0})
    text = (cae_seg / 'test_results.json').read_text()
    (cae_seg / 'test_results.json').write_text(text[:len(text) // 2])
    # A killed write left half a line at the end of a training log.
    log = root / 'sdae' / 'det_seed0' / '20261126_100000' / 'vis_data' / 'scalars.json'
    log.write_text(log.read_text() + '{"lr": 0.0001, "loss": 0.2')
    junk = root / 'junk'
    junk.mkdir()
    (junk / 'run_status.json').write_bytes(b'\x00\x01 not json')
    return root


@pytest.fixture(scope='module')
def bench(tmp_path_factory) -> Path:
    return build_bench(tmp_path_factory.mktemp('work_dirs'))


def report(args: list[str], out: Path, capsys) -> tuple[int, str, dict | None]:
    code = benchmark_report.main([*args, '--out', str(out)])
    err = capsys.readouterr().err
    results = json.loads((out / 'results.json').read_text()) if (out / 'results.json').is_file() else None
    return code, err, results


@pytest.fixture(scope='module')
def bench_report(bench, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp('report')
    assert benchmark_report.main([str(bench), '--out', str(out)]) == 0
    return out, json.loads((out / 'results.json').read_text())


def bench_dir(results: dict) -> Path:
    return Path(results['inputs'][0]['path'])


def rows_by_name(results: dict) -> dict[str, dict]:
    return {r['name']: r for r in results['rows']}


def test_rows_values_and_deltas(bench_report):
    out, res = bench_report
    rows = rows_by_name(res)
    assert list(rows) == ['cae', 'mae 300ep student', 'random init', 'sdae 300ep student']  # order found
    assert res['baseline'] == 'random init' and rows['random init']['is_baseline']
    det = rows['sdae 300ep student']['cells']['det']
    # Two seeds: mean and std, COCO fractions shown as percentages.
    assert det['state'] == 'ok' and det['n_ok'] == 2
    assert det['values']['bbox_AP'] == pytest.approx(41.6)
    assert det['std']['bbox_AP'] == pytest.approx(0.5657, abs=1e-3)
    assert det['values']['segm_AP50'] == pytest.approx(57.3)
    assert det['values']['bbox_APs'] is None  # pycocotools -1: no small objects
    assert det['delta']['bbox_AP'] == pytest.approx(11.6) and det['delta']['segm_AP'] == pytest.approx(10.3)
    seg = rows['sdae 300ep student']['cells']['seg']
    assert seg['values'] == {'mIoU': 45.5, 'mAcc': 55.1, 'aAcc': 80.2}  # mmseg's percentages, unscaled
    assert seg['delta']['mIoU'] == pytest.approx(15.5)
    assert rows['random init']['cells']['det']['delta'] == {}
    prov = rows['sdae 300ep student']['provenance']
    assert (prov['method'], prov['epochs'], prov['branch']) == ('sdae', 300, 'student')
    [pretrain_run] = rows['sdae 300ep student']['pretraining_runs']
    assert pretrain_run.endswith(os.path.join('sdae', 'pretrain'))
    assert rows['random init']['provenance']['checkpoint'] is None
    assert rows['cae']['provenance']['format'].startswith('no metadata')


def test_failed_running_corrupt_and_missing_marked(bench_report):
    out, res = bench_report
    rows = rows_by_name(res)
    assert rows['mae 300ep student']['cells']['det']['state'] == 'failed'
    assert any('loss is NaN' in n for n in rows['mae 300ep student']['notes'])
    assert rows['mae 300ep student']['cells']['seg']['state'] == 'running'
    assert rows['cae']['cells']['seg']['state'] == 'corrupt'
    assert rows['cae']['cells']['det']['state'] == 'missing'
    mae_seg = next(r for r in res['runs'] if r['path'].endswith(os.path.join('mae', 'seg')))
    assert mae_seg['progress'] == 'epoch 3/12' and mae_seg['state'] == 'running'
    warnings = '\n'.join(res['warnings'])
    assert ('cae/seg/test_results.json: invalid JSON (' in warnings and 'truncated or corrupt; rerun '
            'tools/test.py CONFIG CHECKPOINT on this work dir' in warnings)
    assert 'det_seed0/20261126_100000/vis_data/scalars.json: line 13 not valid' in warnings
    assert 'junk/run_status.json: invalid JSON' in warnings and 'task unknown' in warnings
    # The running run is configured for 12 epochs, the others for 2: same recipe name, different settings.
    assert ("seg runs of recipe 'upernet_vit_demo' were trained with different settings: train_cfg.max_epochs"
            in warnings)

    md = (out / 'report.md').read_text()
    table = md.split('## Results')[1].split('\n## ')[0]
    lines = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[1:-1]]
             for line in table.splitlines() if line.startswith('| ') and not line.startswith('| checkpoint')}
    assert lines['sdae 300ep student'][4] == '41.60 ± 0.57 (+11.60)'
    assert lines['sdae 300ep student'][6] == '45.50 (+15.50)'
    assert lines['random init (baseline)'][4] == '30.00*'  # one of two runs has results
    assert 'det: mean of 1 of 2 runs; ' in lines['random init (baseline)'][9]
    assert 'random/det_seed1: not tested' in lines['random init (baseline)'][9]
    assert 'mae/det: failed (RuntimeError: loss is NaN at iter 7)' in lines['mae 300ep student'][9]
    assert lines['mae 300ep student'][4:6] == ['FAILED', 'FAILED']
    assert lines['mae 300ep student'][6] == 'running (epoch 3/12; last val 30.00)'  # the log's last validation
    assert lines['cae'][4] == 'missing' and lines['cae'][6] == 'CORRUPT'
    assert '## Warnings' in md and 'test_results.json: invalid JSON' in md
    pretraining = md.split('## Pretraining runs')[1].split('\n## ')[0]
    assert f'| {bench_dir(res) / "sdae" / "pretrain"} | sdae_vit_demo |' in pretraining  # outside the cwd: absolute
    assert '| finished | epoch 3/3 | 0.2000 | sdae 300ep student |' in pretraining

    with open(out / 'results.csv', newline='') as f:
        csv_rows = {r['row']: r for r in csv.DictReader(f)}
    assert csv_rows['sdae 300ep student']['bbox_AP'] == '41.6'
    assert csv_rows['sdae 300ep student']['delta_mIoU'] == '15.5'
    assert csv_rows['mae 300ep student']['det_state'] == 'failed'
    assert csv_rows['random init']['det_state'] == 'partial' and csv_rows['random init']['det_n_ok'] == '1'
    assert csv_rows['mae 300ep student']['seg_state'] == 'running'
    assert csv_rows['cae']['seg_state'] == 'corrupt' and csv_rows['cae']['mIoU'] == ''


def test_plots_written_and_embedded(bench_report):
    out, res = bench_report
    files = {p['file'] for p in res['plots']}
    assert {'plots/bars_bbox_AP.png', 'plots/bars_mIoU.png', 'plots/curves_det.png', 'plots/curves_seg.png',
            'plots/pretrain_loss.png'} <= files
    for f in files:
        assert (out / f).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    page = (out / 'report.html').read_text()
    assert page.count('src="data:image/png;base64,') == len(files)
    assert 'http://' not in page and 'https://' not in page and '<script' not in page


def test_curves_merge_resumed_sessions(tmp_path):
    run = make_run(tmp_path / 'det', 'det', DET, epochs=2)
    # A resumed session (new timestamp dir) redoes iterations 6..10: its values win.
    resumed = tmp_path / 'det' / '20261126_110000' / 'vis_data' / 'scalars.json'
    resumed.parent.mkdir(parents=True)
    resumed.write_text(''.join(json.dumps({'lr': 1e-4, 'loss': 0.01, 'epoch': 2, 'iter': i, 'step': i}) + '\n'
                               for i in range(6, 11)))
    notes = []
    train, val = read_scalars(run, notes)
    assert [r['step'] for r in train] == list(range(1, 11)) and notes == []
    assert [r['loss'] for r in train[5:]] == [0.01] * 5 and train[0]['loss'] == 3.0
    assert [r['step'] for r in val] == [1, 2] and val[1]['coco/bbox_mAP'] == pytest.approx(0.2)


def test_iteration_run_validations_placed_at_their_iteration(tmp_path):
    # mmengine's LoggerHook(log_metric_by_epoch=True), its default, logs every validation of an IterBasedTrainLoop
    # at step 0; without care they collapse into one point at x = 0.
    log = tmp_path / 'det' / '20261126_100000' / 'vis_data' / 'scalars.json'
    log.parent.mkdir(parents=True)
    lines = []
    for it in range(10, 70, 10):
        lines.append({'lr': 1e-4, 'loss': 1.0 / it, 'iter': it, 'step': it})
        if it % 20 == 0:
            lines.append({'coco/bbox_mAP': it / 100, 'step': 0})
    log.write_text(''.join(json.dumps(x) + '\n' for x in lines))
    notes = []
    train, val = read_scalars(tmp_path / 'det', notes)
    assert [r['step'] for r in train] == [10, 20, 30, 40, 50, 60] and notes == []
    assert [(r['step'], r['coco/bbox_mAP']) for r in val] == [(20, 0.2), (40, 0.4), (60, 0.6)]


def test_mixed_recipes_refused_then_allowed(tmp_path, capsys):
    make_run(tmp_path / 'runs' / 'a', 'det', DET, metrics=coco_metrics(0.3, 0.25), epochs=1)
    make_run(tmp_path / 'runs' / 'b', 'det', 'mask_rcnn_vit_1x', ckpt='sdae.pth', meta=backbone_meta('sdae'),
             metrics=coco_metrics(0.4, 0.35), epochs=1, max_epochs=12, lr=3e-4)
    code, err, res = report([str(tmp_path / 'runs')], tmp_path / 'refused', capsys)
    assert code == 2 and res is None
    assert 'det runs use 2 recipes' in err and DET in err and 'mask_rcnn_vit_1x' in err
    assert 'train_cfg.max_epochs (1 vs 12)' in err and 'optim_wrapper.optimizer.lr' in err
    assert '--allow-mixed-recipes' in err

    code, err, res = report([str(tmp_path / 'runs'), '--allow-mixed-recipes'], tmp_path / 'mixed', capsys)
    assert code == 0 and res['recipes']['det'] == ['mask_rcnn_vit_1x', DET]
    rows = rows_by_name(res)
    assert rows['sdae 300ep student']['cells']['det']['recipes'] == ['mask_rcnn_vit_1x']
    assert rows['sdae 300ep student']['cells']['det']['delta_note'].startswith('recipes differ')
    assert 'shown together: --allow-mixed-recipes' in err
    md = (tmp_path / 'mixed' / 'report.md').read_text()
    assert f'| 30.00 | 25.00 | [{DET}]' not in md and f'| 30.00 [{DET}] | 25.00 [{DET}] |' in md
    assert '| 40.00 (+10.00) [mask_rcnn_vit_1x] |' in md


def test_same_checkpoint_two_recipes_split_when_mixing(tmp_path, capsys):
    make_run(tmp_path / 'a', 'det', DET, metrics=coco_metrics(0.3, 0.25), epochs=1)
    make_run(tmp_path / 'b', 'det', 'mask_rcnn_vit_1x', metrics=coco_metrics(0.5, 0.45), epochs=1)
    code, _, res = report([str(tmp_path / 'a'), str(tmp_path / 'b'), '--allow-mixed-recipes'], tmp_path / 'o', capsys)
    rows = rows_by_name(res)
    assert code == 0 and set(rows) == {'random init', f'random init [{DET}]'}
    # Never averaged across recipes: one row per recipe (a tie goes to the recipe name sorted first).
    assert rows['random init']['cells']['det']['values']['bbox_AP'] == pytest.approx(50.0)
    assert rows['random init']['cells']['det']['recipes'] == ['mask_rcnn_vit_1x']
    assert rows[f'random init [{DET}]']['cells']['det']['values']['bbox_AP'] == pytest.approx(30.0)


def test_names_baseline_published_and_missing(bench, tmp_path, capsys):
    code, err, res = report(['--name', f'SdAE={bench / "sdae"}', '--name', f'scratch={bench / "random"}',
                             '--name', f'lost={tmp_path / "nope"}', '--baseline', 'SdAE', '--published'],
                            tmp_path / 'o', capsys)
    assert code == 0
    rows = rows_by_name(res)
    assert list(rows)[:3] == ['SdAE', 'scratch', 'lost']
    assert res['baseline'] == 'SdAE'
    assert rows['scratch']['cells']['det']['delta']['bbox_AP'] == pytest.approx(-11.6)
    assert rows['lost']['cells']['det']['state'] == 'missing' and rows['lost']['cells']['seg']['state'] == 'missing'
    assert 'nope: does not exist' in err
    pub = rows['SdAE 300ep (published)']
    assert pub['source'] == 'published' and pub['cells']['det']['values'] == {'bbox_AP': 48.9}
    assert pub['cells']['seg']['values'] == {'mIoU': 48.6}
    assert rows['MAE 1600ep (published)']['cells']['det']['values'] == {'bbox_AP': 50.3, 'segm_AP': 44.9}
    assert pub['cells']['det']['delta'] == {}  # published minus a measured baseline would say nothing
    assert any('demo recipes' in w for w in res['warnings'])
    md = (tmp_path / 'o' / 'report.md').read_text()
    assert '| SdAE 300ep (published) | sdae | 300 |  | 48.90 |  | 48.60 |' in md

    # Our rows against a published baseline (what a real-scale user asks).
    code, _, res = report([str(bench / 'sdae'), '--published', '--baseline', 'MAE 1600ep (published)'],
                          tmp_path / 'o2', capsys)
    rows = rows_by_name(res)
    assert code == 0 and rows['MAE 1600ep (published)']['is_baseline']
    assert rows['sdae 300ep student']['cells']['det']['delta']['bbox_AP'] == pytest.approx(41.6 - 50.3)
    assert rows['sdae 300ep student']['cells']['seg']['delta'] == {'mIoU': pytest.approx(45.5 - 48.1)}
    assert rows['CAE 300ep (published)']['cells']['seg']['delta'] == {'mIoU': pytest.approx(48.1 - 48.1)}


def test_bad_arguments_and_nothing_readable(bench, tmp_path, capsys):
    code, err, _ = report([str(bench), '--baseline', 'nonexistent'], tmp_path / 'o1', capsys)
    assert code == 2 and "--baseline 'nonexistent' is not a row" in err and "'random init'" in err
    (tmp_path / 'empty').mkdir()
    code, err, res = report([str(tmp_path / 'empty'), str(bench / 'junk')], tmp_path / 'o2', capsys)
    assert code == 1 and res is None
    assert 'no run could be read' in err and 'junk/run_status.json: invalid JSON' in err
    code, err, _ = report([str(bench), '--baseline', 'student'], tmp_path / 'o1', capsys)
    assert code == 2 and "is not a row" in err
    code, err, res = report([str(bench), '--baseline', 'random'], tmp_path / 'o4', capsys)  # what make demo passes
    assert code == 0 and res['baseline'] == 'random init'
    code, err, res = report([str(bench), '--baseline', 'sdae'], tmp_path / 'o5', capsys)  # a name's first word
    assert code == 0 and res['baseline'] == 'sdae 300ep student'
    code, err, res = report([str(bench), '--published', '--baseline', 'MAE'], tmp_path / 'o6', capsys)
    assert code == 0 and res['baseline'] == 'mae 300ep student'  # measured rows first
    code, err, _ = report(['--name', 'oops'], tmp_path / 'o3', capsys)
    assert code == 2 and 'expected NAME=RUN_DIR' in err


def test_stale_running_run(tmp_path, capsys):
    run = make_run(tmp_path / 'seg', 'seg', SEG, status='running')
    old = time.time() - 5 * 3600
    for p in run.rglob('*'):
        os.utime(p, (old, old))
    code, err, res = report([str(run)], tmp_path / 'o', capsys)
    assert code == 0 and res['runs'][0]['state'] == 'stalled'
    assert 'nothing was written for 5.0 h' in err


def test_script_entry_point(bench, tmp_path):
    # Run from elsewhere without the repository on PYTHONPATH: the installed package is all the script needs.
    path = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p and Path(p).resolve() != ROOT]
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'benchmark_report.py'), str(bench / 'random'),
                           '--out', str(tmp_path / 'o')], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, 'PYTHONPATH': os.pathsep.join(path)})
    assert proc.returncode == 0, proc.stderr
    assert 'wrote ' in proc.stdout and (tmp_path / 'o' / 'report.html').is_file()


def test_html_opens_in_headless_chromium(bench_report, tmp_path):
    from playwright.sync_api import sync_playwright  # drives Debian's chromium: no browser download

    out, res = bench_report
    console, failed, requests = [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS[1:], headless=True)
        context = browser.new_context()
        page = context.new_page()
        page.on('console', lambda m: console.append(f'{m.type}: {m.text}'))
        page.on('pageerror', lambda e: console.append(f'pageerror: {e}'))
        page.on('requestfailed', lambda r: failed.append(r.url))
        page.on('request', lambda r: requests.append(r.url))
        page.goto((out / 'report.html').as_uri(), wait_until='load')
        title = page.title()
        results = page.locator('h2:text-is("Results") + table')  # the verdict table comes first
        header = results.locator('th').all_inner_texts()
        sdae_row = results.locator('tr', has_text='sdae 300ep student').first.inner_text()
        mae_row = results.locator('tr', has_text='mae 300ep student').first.inner_text()
        verdict_row = page.locator('table.verdict tr', has_text='sdae 300ep student').inner_text()
        warnings = page.locator('div.warn').inner_text()
        images = page.eval_on_selector_all('img', 'els => els.map(e => [e.naturalWidth, e.complete])')
        browser.close()
    assert console == [] and failed == []
    assert all(u.startswith(('file://', 'data:')) for u in requests)
    assert title == 'Transfer benchmark report'
    assert 'COCO APbox' in header and 'ADE mIoU' in header
    assert '41.60 ± 0.57 (+11.60)' in sdae_row
    assert verdict_row.split('\t') == ['sdae 300ep student', '1 seed +11.60', '1 seed +15.50']  # random init: 1 seed
    assert 'FAILED' in mae_row and 'running (epoch 3/12; last val 30.00)' in mae_row
    assert 'cae/seg/test_results.json: invalid JSON' in warnings
    assert len(images) == len(res['plots']) and all(w > 100 and ok for w, ok in images)


@pytest.mark.parametrize('victim', ['run_status.json', 'test_results.json', '20261126_100000/vis_data/scalars.json',
                                    '20261126_100000/vis_data/config.py'])
def test_any_file_cut_anywhere_never_crashes(tmp_path, capsys, victim):
    run = make_run(tmp_path / 'seg', 'seg', SEG, ckpt='x.pth', meta=backbone_meta('sdae'),
                   metrics={'aAcc': 80.0, 'mIoU': 40.0, 'mAcc': 50.0})
    whole = (run / victim).read_bytes()
    for i, cut in enumerate((0, 1, len(whole) // 3, len(whole) - 2)):
        (run / victim).write_bytes(whole[:cut])
        code, err, res = report([str(run)], tmp_path / f'o{i}', capsys)
        assert code == 0, err
        if victim.endswith('_results.json'):
            assert res['rows'][0]['cells']['seg']['state'] == 'corrupt'
            assert f'{run / victim}: ' in err
        elif victim == 'run_status.json':  # the test result still says what was measured and from which checkpoint
            assert res['rows'][0]['cells']['seg']['values']['mIoU'] == 40.0 and res['rows'][0]['pretrained'] == 'x.pth'
            assert f'{run / victim}: ' in err
        else:
            assert res['rows'][0]['cells']['seg']['values']['mIoU'] == 40.0


def test_diverged_loss_and_odd_values(tmp_path, capsys):
    run = make_run(tmp_path / 'det', 'det', DET, metrics={'coco/bbox_mAP': 'oops', 'coco/segm_mAP': 0.2}, epochs=1)
    log = run / '20261126_100000' / 'vis_data' / 'scalars.json'
    log.write_text(log.read_text() + '{"lr": 0.1, "loss": NaN, "epoch": 1, "iter": 6, "step": 6}\n')
    code, err, res = report([str(run)], tmp_path / 'o', capsys)
    assert code == 0
    assert res['runs'][0]['final_loss'] == 'nan'  # strict JSON: NaN written as its name
    cell = res['rows'][0]['cells']['det']
    assert cell['state'] == 'ok' and cell['values'] == {'segm_AP': pytest.approx(20.0)}
    assert "coco/bbox_mAP = 'oops' is not a number" in err

    # CocoMetric gives {} when nothing at all was detected.
    (run / 'test_results.json').write_text(json.dumps({'task': 'det', 'recipe': DET, 'metrics': {}, 'status': 'ok'}))
    code, err, res = report([str(run)], tmp_path / 'o2', capsys)
    assert code == 0 and res['rows'][0]['cells']['det']['state'] == 'test failed'
    assert 'no det metric in "metrics" (CocoMetric returns none when the model made no detection' in (
        res['runs'][0]['error'])


def test_invalid_metric_values_named_and_left_out(tmp_path, capsys, monkeypatch):
    import matplotlib.axes

    make_run(tmp_path / 'runs' / 'random_seed0', 'det', DET, metrics=coco_metrics(0.30, 0.25), epochs=1)
    # A string that holds a number, and a NaN: neither is "n/a" (no ground truth of that size) nor enters the mean.
    odd = make_run(tmp_path / 'runs' / 'random_seed1', 'det', DET, epochs=1,
                   metrics=coco_metrics(0.50, 0.40) | {'coco/bbox_mAP': '0.5', 'coco/segm_mAP': float('nan')})
    log = odd / '20261126_100000' / 'vis_data' / 'scalars.json'
    log.write_text(log.read_text() + '{"lr": 0.1, "loss": Infinity, "epoch": 1, "iter": 6, "step": 6}\n'
                   '{"coco/bbox_mAP": NaN, "coco/segm_mAP": "0.2", "step": 1}\n')
    # Every metric NaN / inf: an invalid result, not "the model made no detection".
    bad = make_run(tmp_path / 'runs' / 'sdae', 'det', DET, ckpt='sdae.pth', meta=backbone_meta('sdae'), epochs=1,
                   metrics={k: float('inf') if 'bbox' in k else float('nan') for k in coco_metrics(0, 0)})
    bars, lines = {}, []
    real_bar, real_plot = matplotlib.axes.Axes.bar, matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, 'bar', lambda ax, x, h, *a, **k: (
        bars.setdefault(len(bars), list(h)), real_bar(ax, x, h, *a, **k))[1])
    monkeypatch.setattr(matplotlib.axes.Axes, 'plot', lambda ax, *a, **k: (lines.append(a), real_plot(ax, *a, **k))[1])

    code, err, res = report([str(tmp_path / 'runs')], tmp_path / 'o', capsys)
    assert code == 0
    assert (f"warning: {odd / 'test_results.json'}: coco/bbox_mAP = '0.5' is not a number (a number stored as a "
            "string: not written by tools/test.py?); coco/segm_mAP = nan is not a number (NaN: the evaluation produced "
            "no number): invalid values, shown as INVALID and left out of means and plots; rerun tools/test.py CONFIG "
            "CHECKPOINT on this work dir\n") in err
    # One message per file, however many values are broken.
    assert (f"warning: {bad / 'test_results.json'}: coco/bbox_mAP, coco/bbox_mAP_50, coco/bbox_mAP_75 and 3 more = inf "
            "are not numbers (infinite); coco/segm_mAP, coco/segm_mAP_50, coco/segm_mAP_75 and 3 more = nan are not "
            "numbers (NaN: the evaluation produced no number): invalid values") in err
    assert err.count(str(bad / 'test_results.json')) == 1
    rows = rows_by_name(res)
    det = rows['random init']['cells']['det']
    assert det['state'] == 'ok' and det['values']['bbox_AP'] == pytest.approx(30.0)  # not (30 + 50) / 2
    assert det['values']['segm_AP'] == pytest.approx(25.0) and 'bbox_AP' not in det['std']
    assert det['invalid'] == {'bbox_AP': [str(odd)], 'segm_AP': [str(odd)]}
    assert det['values']['bbox_AP50'] == pytest.approx(60.0)  # the run's valid values still count
    sdae = rows['sdae 300ep student']['cells']['det']
    assert sdae['state'] == 'invalid' and sdae['values'] == {} and sdae['delta'] == {}
    [bad_run] = [r for r in res['runs'] if r['path'] == str(bad)]
    assert bad_run['state'] == 'invalid' and 'no detection' not in bad_run['error']
    assert bad_run['error'] == (f'{bad / "test_results.json"}: no valid det metric, every one is invalid: '
                                'coco/bbox_mAP, coco/bbox_mAP_50, coco/bbox_mAP_75 and 3 more = inf; coco/segm_mAP, '
                                'coco/segm_mAP_50, coco/segm_mAP_75 and 3 more = nan')
    assert bad_run['invalid_metrics']['segm_AP'] == 'nan'

    md = (tmp_path / 'o' / 'report.md').read_text()
    table = md.split('## Results')[1].split('\n## ')[0]
    cells = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[1:-1]]
             for line in table.splitlines() if line.startswith('| ') and not line.startswith('| checkpoint')}
    assert cells['random init (baseline)'][4:6] == ['30.00†', '25.00†']
    assert f"† det AP^box: invalid value left out: {odd / 'test_results.json'} ('0.5')" in cells[
        'random init (baseline)'][6]
    assert cells['sdae 300ep student'][4:6] == ['INVALID', 'INVALID']
    assert 'INVALID: the stored value is not a number' in table
    all_det = md.split('## COCO (Mask R-CNN): all metrics')[1].split('\n## ')[0]
    assert '| random init | 30.00† | 60.00 ± 14.14 | 35.00 ± 14.14 | n/a |' in all_det  # -1 stays n/a: no small objects

    # Out of the plots: the bar of the invalid row, the NaN validation point and the infinite loss.
    assert [30.0, 25.0] == [h[0] for h in bars.values()] and all(len(h) == 1 for h in bars.values())
    ys = [y for a in lines if len(a) >= 2 for y in a[1]]
    assert ys and all(isinstance(y, float | int) and y == y and abs(y) != float('inf') for y in ys)


def test_pictures_embedded_and_tables_fit_a_laptop_screen(bench, tmp_path, capsys):
    """--visuals folders' figures are copied next to report.md and embedded in report.html; at a 1280-px viewport the
    page, long paths and the 13-column COCO table included, needs no horizontal scrolling."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from sdae_suite.visualize.manifest import write_manifest

    feats = tmp_path / 'visuals' / 'features'
    feats.mkdir(parents=True)
    Image.new('RGB', (2400, 300), (200, 40, 40)).save(feats / 'attention.png')  # wider than the screen
    write_manifest(feats, 'What the encoders see', [
        {'file': 'attention.png', 'title': 'Last-block cls attention per head', 'caption': 'rows: checkpoints'},
        {'file': 'gone.png', 'title': 'Missing', 'caption': ''}])
    code, err, res = report([str(bench), '--visuals', str(tmp_path / 'visuals'), '--visuals', str(tmp_path / 'nope')],
                            tmp_path / 'o', capsys)
    out = tmp_path / 'o'
    assert code == 0
    assert f'--visuals {tmp_path / "nope"}: does not exist' in err
    assert f'{feats / "gone.png"} is missing or not a PNG; that picture is left out' in err
    md = (out / 'report.md').read_text()
    assert '## What the encoders see' in md
    assert '![Last-block cls attention per head](visuals/0_features/attention.png)' in md
    assert (out / 'visuals' / '0_features' / 'attention.png').read_bytes() == (feats / 'attention.png').read_bytes()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS[1:], headless=True)
        page = browser.new_page(viewport={'width': 1280, 'height': 800})
        page.goto((out / 'report.html').as_uri(), wait_until='load')
        scroll_width = page.evaluate('document.documentElement.scrollWidth')
        tables = page.eval_on_selector_all('table', 'els => els.map(e => e.getBoundingClientRect().right)')
        pictures = page.eval_on_selector_all('figure.visual img', '''els => els.map(e => {
            const r = e.getBoundingClientRect();
            return [e.naturalWidth, e.complete, r.width, r.height, getComputedStyle(e).visibility]; })''')
        browser.close()
    assert scroll_width <= 1280 and tables and max(tables) <= 1280
    assert len(pictures) == 1
    natural, complete, width, height, visibility = pictures[0]
    assert natural == 2400 and complete and 0 < width <= 1280 and height > 0 and visibility == 'visible'
