"""The benchmark report on ImageNet-style classification runs (cls_ft / cls_linear work dirs written here the way
tools/train.py + tools/test.py write them): the classification columns, the published IN-1K references with their
sources, classification in the verdict table, and no empty plot for runs that did not validate during training."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_report import CHROMIUM, CHROMIUM_ARGS, DET, SEG, backbone_meta, build_bench, make_run

from sdae_suite.commands import benchmark_report
from sdae_suite.report import render

FT_DEMO, LIN_DEMO = 'sdae_vit-tiny-p8_1xb64-ft_demo', 'sdae_vit-tiny-p8_1xb32-linear_demo'
FT_IN1K, LIN_IN1K = 'sdae_vit-base-p16_8xb128-ft-100e_in1k', 'sdae_vit-base-p16_8xb512-accum4-linear-90e_in1k'
CKPTS = {'sdae': 'ckpts/sdae_300ep.pth', 'mae': 'ckpts/mae_300ep.pth', 'random': None}


def cls_metrics(top1: float, top5: float | None = None, top1_max: float | None = None) -> dict:
    """test_results.json metrics as tools/test.py writes them for cls_configs/ (percent)."""
    out = {'accuracy/top1': top1}
    if top5 is not None:
        out['accuracy/top5'] = top5
    if top1_max is not None:
        out['accuracy/top1_max'] = top1_max
    return out


def cls_run(root: Path, kind: str, init: str, seed: int, recipe: str, metrics: dict,
            val: list[float] | None = None) -> Path:
    """<finetune>/<kind>_<init>_seed<N>/, as the pipeline names them; `val`: top-1 of each validated epoch."""
    ckpt = CKPTS[init]
    run = make_run(root / f'{kind}_{init}_seed{seed}', kind, recipe, ckpt=ckpt,
                   meta=backbone_meta(init) if ckpt else None, metrics=metrics, epochs=max(len(val or []), 2))
    if val:
        log = run / '20261126_100000' / 'vis_data' / 'scalars.json'
        log.write_text(log.read_text() + ''.join(json.dumps({'accuracy/top1': v, 'accuracy/top5': 99.0,
                                                             'step': ep}) + '\n' for ep, v in enumerate(val, 1)))
    return run


def build_demo_cls(root: Path) -> Path:
    """Demo-recipe classification runs: fine-tuning of three inits x 2 seeds (sdae's with top-1 max), linear probing
    of two inits; mae's fine-tuning result has no top-5."""
    ft = {'sdae': [(60.0, 95.0, 62.0), (62.0, 96.0, 63.0)], 'mae': [(55.0, None, None), (57.0, None, None)],
          'random': [(40.0, 85.0, None), (41.0, 86.0, None)]}
    for init, seeds in ft.items():
        for seed, (top1, top5, mx) in enumerate(seeds):
            cls_run(root, 'cls_ft', init, seed, FT_DEMO, cls_metrics(top1, top5, mx),
                    val=[top1 - 5, top1] if init == 'sdae' else None)
    lin = {'sdae': [30.0, 31.0], 'random': [30.5, 33.0]}
    for init, seeds in lin.items():
        for seed, top1 in enumerate(seeds):
            cls_run(root, 'cls_linear', init, seed, LIN_DEMO, cls_metrics(top1, top1 + 40))
    return root


def run_report(args: list[str], out: Path, capsys) -> tuple[dict, str, str]:
    assert benchmark_report.main([*args, '--out', str(out)]) == 0
    capsys.readouterr()
    return json.loads((out / 'results.json').read_text()), (out / 'report.md').read_text(), \
        (out / 'report.html').read_text()


def md_table(md: str, title: str) -> tuple[list[str], dict[str, list[str]]]:
    """(header, {first cell: cells}) of the Markdown table under `## title`."""
    text = md.split(f'## {title}\n')[1].split('\n## ')[0]
    rows = [[c.strip() for c in line.split(' | ')] for line in text.splitlines() if line.startswith('| ')]
    rows = [[r[0].removeprefix('| ')] + r[1:-1] + [r[-1].removesuffix(' |')] for r in rows]
    return rows[0], {r[0]: r[1:] for r in rows[1:]}


@pytest.fixture(scope='module')
def demo(tmp_path_factory) -> tuple[Path, dict, str, str]:
    root = build_demo_cls(tmp_path_factory.mktemp('finetune'))
    out = tmp_path_factory.mktemp('report')
    assert benchmark_report.main([str(root), '--baseline', 'random', '--out', str(out)]) == 0
    return out, json.loads((out / 'results.json').read_text()), (out / 'report.md').read_text(), \
        (out / 'report.html').read_text()


def test_classification_columns_means_over_seeds_and_missing_values(demo):
    out, res, md, page = demo
    rows = {r['name']: r for r in res['rows']}
    assert list(rows) == ['mae 300ep student', 'random init', 'sdae 300ep student']  # work dirs in name order
    ft = rows['sdae 300ep student']['cells']['cls_ft']
    assert ft['state'] == 'ok' and ft['n_ok'] == 2 and ft['recipes'] == [FT_DEMO]
    assert ft['values'] == {'ft_top1': 61.0, 'ft_top5': 95.5, 'ft_top1_max': 62.5}
    assert ft['std']['ft_top1'] == pytest.approx(2 ** 0.5) and ft['delta']['ft_top1'] == pytest.approx(20.5)
    mae = rows['mae 300ep student']['cells']
    assert mae['cls_ft']['values'] == {'ft_top1': 56.0}  # no top-5 in its results: absent, not 0
    assert mae['cls_linear']['state'] == 'missing' and mae['cls_linear']['values'] == {}
    assert rows['random init']['cells']['cls_linear']['values']['lin_top1'] == pytest.approx(31.75)
    titles = {c['metric']: c['title'] for c in res['columns']}
    assert titles == {'ft_top1': 'fine-tune top-1 (demo pool)', 'ft_top5': 'fine-tune top-5 (demo pool)',
                      'ft_top1_max': 'fine-tune top-1 max (demo pool)',  # sdae's runs have it: the column is shown
                      'lin_top1': 'linear-probe top-1 (demo pool)', 'lin_top5': 'linear-probe top-5 (demo pool)'}

    header, table = md_table(md, 'Results')
    assert header[4:9] == ['fine-tune top-1 (demo pool)', 'fine-tune top-5 (demo pool)',
                           'fine-tune top-1 max (demo pool)', 'linear-probe top-1 (demo pool)',
                           'linear-probe top-5 (demo pool)']
    assert table['sdae 300ep student'][3:8] == ['61.00 ± 1.41 (+20.50)', '95.50 ± 0.71 (+10.00)', '62.50 ± 0.71',
                                                '30.50 ± 0.71 (-1.25)', '70.50 ± 0.71 (-1.25)']
    assert table['mae 300ep student'][3:8] == ['56.00 ± 1.41 (+15.50)', '—', '—', 'missing', 'missing']
    assert table['random init (baseline)'][3:6] == ['40.50 ± 0.71', '85.50 ± 0.71', '—']
    assert 'cls_ft: mean ± std of 2 runs' in table['sdae 300ep student'][-1]
    legend = md.split('## Results\n')[1].split('\n## ')[0]
    assert 'top-1 max: the best top-1 over the epochs validated during training' in legend
    assert '_demo -> demo pool' in legend and 'IN-1K' in legend
    assert '<th>fine-tune top-1 (demo pool)</th>' in page

    with open(out / 'results.csv', newline='') as f:
        csv_rows = {r['row']: r for r in csv.DictReader(f)}
    assert csv_rows['mae 300ep student']['ft_top1'] == '56.0' and csv_rows['mae 300ep student']['ft_top5'] == ''


def test_top1_max_of_some_seeds_noted(tmp_path, capsys):
    cls_run(tmp_path / 'runs', 'cls_ft', 'sdae', 0, FT_IN1K, cls_metrics(83.0, 96.4, 83.4))
    cls_run(tmp_path / 'runs', 'cls_ft', 'sdae', 1, FT_IN1K, cls_metrics(83.2, 96.6))  # never validated
    res, md, _ = run_report([str(tmp_path / 'runs')], tmp_path / 'o', capsys)
    cell = res['rows'][0]['cells']['cls_ft']
    assert cell['values']['ft_top1_max'] == 83.4 and cell['n'] == {'ft_top1': 2, 'ft_top5': 2, 'ft_top1_max': 1}
    header, table = md_table(md, 'Results')
    assert header[4:7] == ['IN-1K fine-tune top-1', 'IN-1K fine-tune top-5', 'IN-1K fine-tune top-1 max']
    assert table['sdae 300ep student'][3:6] == ['83.10 ± 0.14', '96.50 ± 0.14', '83.40']
    assert 'cls_ft fine-tune top-1 max: mean of the 1 of 2 runs that have it' in table['sdae 300ep student'][-1]


def test_classification_in_the_ranking_and_the_verdict_table(demo):
    _, res, md, page = demo
    ft, lin = 'fine-tune top-1 (demo pool)', 'linear-probe top-1 (demo pool)'
    assert list(res['ranking']) == [ft, lin]
    assert [(r['init'], r['n']) for r in res['ranking'][ft]] == [
        ('sdae 300ep student', 2), ('mae 300ep student', 2), ('random init', 2)]
    table = res['verdict']['table']
    assert table['metrics'] == [ft, lin] and [r['init'] for r in table['rows']] == ['mae 300ep student',
                                                                                     'sdae 300ep student']
    sdae = table['rows'][1]['cells']
    assert (sdae[ft]['outcome'], sdae[ft]['text']) == ('win', 'win +20.50')  # 60, 62 above 40, 41
    assert (sdae[lin]['outcome'], sdae[lin]['text']) == ('tie', 'tie -1.25')  # 30-31 overlaps 30.5-33
    assert lin not in table['rows'][0]['cells']  # mae has no linear-probe run
    assert res['verdict']['summary_line'] == (
        f'Verdict: random init is beaten beyond the seed spread on {ft}; against it: mae 300ep student 1 win, 0 ties, '
        '0 losses; sdae 300ep student 1 win, 1 tie, 0 losses.')
    verdict = md.split('## Ranking and verdict\n')[1].split('### Ranking per metric')[0]
    assert verdict.splitlines()[1:7] == [
        f'**Verdict:** {res["verdict"]["summary_line"].removeprefix("Verdict: ")}', '',
        f'| init vs random init | {ft} | {lin} |', '|---|---|---|',
        '| mae 300ep student | win +15.50 | — |', '| sdae 300ep student | win +20.50 | tie -1.25 |']
    assert '<td class="win">win +20.50</td><td class="tie">tie -1.25</td>' in page


def test_published_rows_with_sources_only_with_the_flag(tmp_path, capsys):
    runs = tmp_path / 'runs'
    for seed in (0, 1):
        cls_run(runs, 'cls_ft', 'sdae', seed, FT_IN1K, cls_metrics(83.0 + seed, 96.0))
        cls_run(runs, 'cls_linear', 'sdae', seed, LIN_IN1K, cls_metrics(60.0 + seed, 82.0))
    res, md, page = run_report([str(runs)], tmp_path / 'plain', capsys)
    assert [r['source'] for r in res['rows']] == ['measured']
    assert '(published)' not in md + page and 'source:' not in md + page and '84.1' not in md + page

    res, md, page = run_report([str(runs), '--published'], tmp_path / 'pub', capsys)
    rows = {r['name']: r for r in res['rows']}
    sdae, mae, mmp = (rows[n] for n in ('SdAE 300ep (published)', 'MAE 1600ep (published)',
                                        'MAE 300ep mmpretrain (published)'))
    assert sdae['cells']['cls_ft']['values'] == {'ft_top1': 84.1} and 'cls_linear' not in sdae['cells']
    assert mae['cells']['cls_ft']['values'] == {'ft_top1': 83.6} and mae['cells']['cls_linear']['values'] == {
        'lin_top1': 68.0}
    assert mmp['cells']['cls_ft']['values'] == {'ft_top1': 83.1} and mmp['cells']['cls_linear']['values'] == {
        'lin_top1': 60.8}
    assert (mmp['provenance']['method'], mmp['provenance']['epochs']) == ('mae', 300)
    assert sdae['reference']['source'] == 'SdAE paper abstract, arXiv 2208.00449 (ECCV 2022)'
    assert 'facebookresearch/mae FINETUNE.md' in mae['reference']['source'] and '67.8' in mae['reference']['note']
    assert mmp['reference']['source'].startswith('mmpretrain configs/mae/README.md (v1.2.0)')
    assert all(r['reference'] and r['reference']['source'] for r in res['rows'] if r['source'] == 'published')

    header, table = md_table(md, 'Results')
    assert header[4:] == ['IN-1K fine-tune top-1', 'IN-1K fine-tune top-5', 'IN-1K linear-probe top-1',
                          'IN-1K linear-probe top-5', 'notes']
    assert table['SdAE 300ep (published)'][3:7] == ['84.10', '', '', '']
    assert table['MAE 300ep mmpretrain (published)'][3:7] == ['83.10', '', '60.80', '']
    # The source is visible beside the numbers; published numbers without a column here are quoted, not lost.
    assert table['SdAE 300ep (published)'][-1].startswith(
        'source: SdAE paper abstract, arXiv 2208.00449 (ECCV 2022); also published: COCO AP^box 48.9, ADE mIoU 48.6')
    assert 'Published rows (--published) are quoted, not measured here' in md
    assert 'source: mmpretrain configs/mae/README.md (v1.2.0)' in page
    assert rows['sdae 300ep student']['cells']['cls_ft']['delta'] == {}  # no baseline (no random init): no deltas
    assert sdae['cells']['cls_ft']['delta'] == {}


def test_published_in1k_numbers_kept_out_of_demo_columns(demo, tmp_path, capsys):
    root = Path(demo[1]['inputs'][0]['path'])
    res, md, _ = run_report([str(root), '--published'], tmp_path / 'o', capsys)
    rows = {r['name']: r for r in res['rows']}
    # IN-1K top-1 in a '(demo pool)' column would be mislabelled: quoted in the notes instead.
    assert 'cls_ft' not in rows['SdAE 300ep (published)']['cells']
    assert rows['SdAE 300ep (published)']['reference']['values']['ft_top1'] == 84.1
    _, table = md_table(md, 'Results')
    assert table['SdAE 300ep (published)'][3] == ''
    assert 'also published: COCO AP^box 48.9, ADE mIoU 48.6, IN-1K fine-tune top-1 84.1' in table[
        'SdAE 300ep (published)'][-1]
    assert 'also published: IN-1K fine-tune top-1 83.1, IN-1K linear-probe top-1 60.8' in table[
        'MAE 300ep mmpretrain (published)'][-1]
    assert any('demo recipes' in w for w in res['warnings'])


def test_no_validation_data_no_empty_plot(tmp_path, capsys, monkeypatch):
    """The demo skips in-training validation: the curves figure has the loss panel only and a line says why; a task
    that did validate keeps its validation panel. Every axis of every figure drawn holds data."""
    drawn: dict[str, list[int]] = {}  # file -> artists per axis
    real_save = render._save

    def save(fig, path):
        drawn[path.name] = [len(ax.lines) + len(ax.patches) + len(ax.collections) for ax in fig.axes]
        real_save(fig, path)

    monkeypatch.setattr(render, '_save', save)
    root = build_demo_cls(tmp_path / 'finetune')  # cls_ft: sdae's runs validated; cls_linear: none did
    # A detection run of the demo pipeline: validation pushed past the end of training.
    run = make_run(tmp_path / 'finetune' / 'det_random_seed0', 'det', DET, metrics={'coco/bbox_mAP': 0.3})
    log = run / '20261126_100000' / 'vis_data' / 'scalars.json'
    log.write_text(''.join(line + '\n' for line in log.read_text().splitlines() if '"lr"' in line))
    cfg = log.parent / 'config.py'
    cfg.write_text(cfg.read_text().replace('val_interval=1', 'val_interval=1, val_begin=1000000000'))
    res, md, page = run_report([str(root)], tmp_path / 'o', capsys)

    plots = {p['file']: p for p in res['plots']}
    assert {'plots/curves_cls_ft.png', 'plots/curves_cls_linear.png', 'plots/curves_det.png'} <= set(plots)
    assert drawn['curves_cls_ft.png'] == [6, 2]  # loss and validation, one line per run (validation: sdae's 2)
    assert drawn['curves_cls_linear.png'] == [4] and drawn['curves_det.png'] == [1]  # the loss panel only
    assert all(drawn.values()) and all(n > 0 for counts in drawn.values() for n in counts)
    assert 'note' not in plots['plots/curves_cls_ft.png']
    assert plots['plots/curves_cls_linear.png']['note'] == (
        'Classification linear probing: no validation curve: the runs did not validate during training (no '
        'validation line in their logs); their numbers are the test results.')
    assert plots['plots/curves_det.png']['note'] == (
        'COCO (Mask R-CNN): no validation curve: the runs did not validate during training (train_cfg.val_begin or '
        'val_interval is past the end of training); their numbers are the test results.')
    assert md.count('no validation curve') == 2 and page.count('no validation curve') == 2
    assert md.index('![COCO (Mask R-CNN) fine-tuning curves](plots/curves_det.png)') < md.index(
        'COCO (Mask R-CNN): no validation curve')
    assert page.count('src="data:image/png;base64,') == len(plots)


def test_widest_report_fits_a_laptop_screen(tmp_path, capsys):
    """COCO, ADE, fine-tuning and linear-probe columns (top-1 max included) and the verdict table at 1280 px."""
    from playwright.sync_api import sync_playwright

    root = build_bench(tmp_path / 'bench')
    build_demo_cls(tmp_path / 'cls')
    make_run(tmp_path / 'seg_sdae_seed1', 'seg', SEG, ckpt=CKPTS['sdae'], meta=backbone_meta('sdae'),
             metrics={'aAcc': 80.0, 'mIoU': 45.0, 'mAcc': 55.0})
    res, _, _ = run_report([str(root), str(tmp_path / 'cls'), str(tmp_path / 'seg_sdae_seed1'), '--published'],
                           tmp_path / 'o', capsys)
    assert res['tasks'] == ['det', 'seg', 'cls_ft', 'cls_linear'] and res['verdict']['table']['rows']
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS[1:], headless=True)
        page = browser.new_page(viewport={'width': 1280, 'height': 800})
        page.goto((tmp_path / 'o' / 'report.html').as_uri(), wait_until='load')
        scroll_width = page.evaluate('document.documentElement.scrollWidth')
        rights = page.eval_on_selector_all('table', 'els => els.map(e => e.getBoundingClientRect().right)')
        verdict = page.locator('table.verdict tr', has_text='sdae 300ep student').inner_text()
        browser.close()
    assert scroll_width <= 1280 and rights and max(rights) <= 1280
    assert 'fine-tune top-1 (demo pool)' in res['verdict']['table']['metrics'] and 'win +' in verdict
