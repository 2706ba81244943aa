"""tools/run_benchmark.py's work-dir lock, its stage records (keyed by what a stage was computed with) and the
interpreter its stages run with, on stages of a few milliseconds (tests/test_pipeline.py runs the real stages)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdae_suite.commands import run_benchmark as rb
from sdae_suite.pipeline.state import LAST, WorkDirLocked, config_digest, work_dir_lock

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# A training stage in miniature: resumes from the checkpoint in its work dir (and says so in train.log), "trains" to
# ITERS and records the checkpoint as mmengine does. With the file FAIL present it dies after its first checkpoint.
TRAIN = r'''
import sys; from pathlib import Path
wd, iters, fail = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
wd.mkdir(parents=True, exist_ok=True)
ckpt = wd / 'ckpt.txt'
start = int(ckpt.read_text()) if ckpt.is_file() else 0
with open(wd / 'train.log', 'a') as log:
    log.write(f'resumed from {start}\n' if start else 'from scratch\n')
ckpt.write_text(str(min(start + 2, iters) if fail.exists() else iters))
(wd / 'last_checkpoint').write_text(str(ckpt))
sys.exit(1 if fail.exists() else 0)
'''
TEST = r'''
import json, sys; from pathlib import Path
ckpt, out = Path(sys.argv[1]), Path(sys.argv[2])
out.write_text(json.dumps({'iters': int(ckpt.read_text())}))
'''


def fake_stages(tmp: Path, budget: str) -> list[rb.Stage]:
    wd = tmp / 'work' / 'train'
    iters = '4' if budget == 'tiny' else '100'
    return [rb.Stage('train', [PY, '-c', TRAIN, str(wd), iters, str(tmp / 'FAIL')], 1.0, budget=budget,
                     outputs=[str(wd / 'last_checkpoint')], work_dir=wd),
            rb.Stage('train-test', [PY, '-c', TEST, f'{LAST}{wd}', str(wd / 'test_results.json')], 1.0, budget=budget,
                     inputs=[f'{LAST}{wd}'], outputs=[str(wd / 'test_results.json')])]


def pipeline(tmp: Path, budget: str, capfd) -> tuple[int, str]:
    code = rb.run(fake_stages(tmp, budget), tmp / 'work')
    out, err = capfd.readouterr()
    return code, out + err


def results(tmp: Path) -> dict:
    return json.loads((tmp / 'work' / 'train' / 'test_results.json').read_text())


def test_changed_budget_recomputes_and_training_starts_fresh(tmp_path, capfd):
    wd = tmp_path / 'work' / 'train'
    assert pipeline(tmp_path, 'tiny', capfd)[0] == 0 and results(tmp_path) == {'iters': 4}
    code, out = pipeline(tmp_path, 'tiny', capfd)
    assert code == 0 and '2/2 stages already finished' in out and '$ ' not in out  # same settings: nothing runs

    code, out = pipeline(tmp_path, 'default', capfd)
    assert code == 0, out
    assert ("2 finished stage(s) were computed with something else and run again: train (budget 'tiny' -> 'default'; "
            "command changed (-4, +100)), train-test (budget 'tiny' -> 'default')") in out
    assert "train had finished; it runs again: budget 'tiny' -> 'default'; command changed (-4, +100)" in out
    [old] = list((tmp_path / 'work' / 'superseded').glob('*/train'))
    assert (f"[benchmark] train: moved its work dir {wd} aside to {old}; the stage starts from scratch instead of "
            "resuming those checkpoints") in out
    assert (wd / 'train.log').read_text() == 'from scratch\n'  # not resumed from the tiny checkpoint
    assert (old / 'ckpt.txt').read_text() == '4' and (old / 'train.log').is_file()  # nothing lost
    assert results(tmp_path) == {'iters': 100}
    done = json.loads((tmp_path / 'work' / 'stages' / 'train.done').read_text())
    assert done['recipe']['budget'] == 'default' and done['recipe']['cmd'][0] == '<python>'


def test_interrupted_stage_resumes_only_with_the_same_settings(tmp_path, capfd):
    wd = tmp_path / 'work' / 'train'
    (tmp_path / 'FAIL').touch()  # dies after its first checkpoint, as a killed run
    code, out = pipeline(tmp_path, 'tiny', capfd)
    assert code == 1 and 'stage train FAILED' in out
    (tmp_path / 'FAIL').unlink()
    code, out = pipeline(tmp_path, 'tiny', capfd)  # same settings: continues from its checkpoint
    assert code == 0 and (wd / 'train.log').read_text() == 'from scratch\nresumed from 2\n' and 'aside' not in out

    (tmp_path / 'FAIL').touch()
    code, out = pipeline(tmp_path, 'default', capfd)  # finished tiny, then a default run killed in training
    assert code == 1 and 'moved its work dir' in out
    (tmp_path / 'FAIL').unlink()
    code, out = pipeline(tmp_path, 'tiny', capfd)  # back to tiny: the interrupted default run is not resumed either
    assert code == 0
    assert ("budget 'default' -> 'tiny'; command changed (-100, +4): moved its work dir" in out)
    assert (wd / 'train.log').read_text() == 'from scratch\n' and results(tmp_path) == {'iters': 4}
    kept = sorted((tmp_path / 'work' / 'superseded').glob('*/train'))  # both old work dirs, even within one second
    assert [(d / 'ckpt.txt').read_text() for d in kept] == ['4', '2']


def test_changed_input_or_output_and_old_markers_recompute(tmp_path, capfd):
    wd = tmp_path / 'work' / 'train'
    marks = tmp_path / 'work' / 'stages'
    assert pipeline(tmp_path, 'tiny', capfd)[0] == 0
    (wd / 'ckpt.txt').write_text('7')  # the checkpoint the test read was rewritten by hand
    code, out = pipeline(tmp_path, 'tiny', capfd)
    assert code == 0 and f'train-test had finished; it runs again: its input checkpoint recorded in {wd} changed ' \
                         'since' in out
    assert results(tmp_path) == {'iters': 7} and 'train had finished' not in out

    (wd / 'test_results.json').unlink()
    code, out = pipeline(tmp_path, 'tiny', capfd)
    assert code == 0 and f'its output {wd / "test_results.json"} is gone' in out and results(tmp_path)

    # A record of the version before keyed markers: only the command and the time.
    (marks / 'train-test.done').write_text(json.dumps({'cmd': ['x'], 'seconds': 1.0}))
    code, out = pipeline(tmp_path, 'tiny', capfd)
    assert code == 0 and 'train-test (its record predates keyed stage markers' in out


def test_every_stage_key_depends_on_the_budget(monkeypatch, tmp_path):
    args = argparse.Namespace(gpus=1, data_root=tmp_path / 'data', imagenet=None, coco=None, ade=None)
    keys = {}
    for budget in ('tiny', ''):
        monkeypatch.setenv('SDAE_DEMO_BUDGET', budget)
        stages = rb.build_stages(args, rb.PRESETS['demo'], tmp_path / 'work')
        keys[budget] = {s.name: rb.recipe_key(s.recipe()) for s in stages}
    assert len(keys['tiny']) == 33 and all(keys['tiny'][n] != keys[''][n] for n in keys['tiny'])


def test_probe_stage_probes_both_backbones_and_random_init_over_three_seeds(monkeypatch, tmp_path):
    """After the exports and before fine-tuning: tools/probe.py on the two exported student backbones and random init,
    k-NN / linear / linear-seg over the preset's 3 probe seeds; its result files are its outputs and the report's
    inputs, and the report reads the probes folder."""
    monkeypatch.setenv('SDAE_DEMO_BUDGET', '')
    args = argparse.Namespace(gpus=1, data_root=tmp_path / 'data', imagenet=None, coco=None, ade=None)
    work = tmp_path / 'work'
    stages = rb.build_stages(args, rb.PRESETS['demo'], work)
    names = [s.name for s in stages]
    assert names.index('export-mae') < names.index('probes') < names.index('det-sdae-seed0')
    probe = stages[names.index('probes')]
    sdae, mae = work / 'pretrain_sdae' / 'backbone_student.pth', work / 'pretrain_mae' / 'backbone_student.pth'
    assert probe.cmd == [PY, 'tools/probe.py', f'--name=sdae={sdae}', f'--name=mae={mae}', '--random',
                         '--data', str(tmp_path / 'data'), '--probes', 'knn', 'linear', 'seg', '--seeds', '0', '1', '2',
                         '--out', str(work / 'probes')]
    assert probe.inputs == [str(tmp_path / 'data' / 'meta.json'), str(sdae), str(mae)]
    assert len(probe.outputs) == 3 * 3 * 3 and str(work / 'probes' / 'random_init' / 'seg_seed2.json') in probe.outputs
    assert probe.est_s == rb.PRESETS['demo'].est['probe']
    # SdAE's pretraining step costs more than MAE's: each has its own expected duration (the ETA); the full preset's
    # one 'pretrain' value serves both.
    est = {s.name: s.est_s for s in stages}
    assert (est['pretrain-sdae'], est['pretrain-mae']) == (150, 100)
    full = rb.build_stages(argparse.Namespace(gpus=8, data_root=None, imagenet=tmp_path / 'in1k', coco=tmp_path / 'c',
                                              ade=tmp_path / 'a'), rb.PRESETS['full'], tmp_path / 'full')
    assert {s.est_s for s in full if s.name.startswith('pretrain-')} == {rb.PRESETS['full'].est['pretrain']}
    report = stages[-1]
    assert report.name == 'report' and str(work / 'probes') in report.cmd
    assert report.cmd.index(str(work / 'probes')) < report.cmd.index('--out')
    assert set(probe.outputs) <= set(report.inputs)

    # tiny budget: a few images per class; only the pretrained inits asked for: no --random
    monkeypatch.setenv('SDAE_DEMO_BUDGET', 'tiny')
    preset = rb.replace(rb.PRESETS['demo-long'], inits=('sdae', 'mae'), probe_seeds=(4, 5))
    probe = next(s for s in rb.build_stages(args, preset, work) if s.name == 'probes')
    assert '--random' not in probe.cmd and probe.budget == 'tiny'
    assert probe.cmd[probe.cmd.index('--seeds') + 1:][:2] == ['4', '5']
    assert probe.cmd[probe.cmd.index('--max-train-per-class') + 1] == '8'
    assert not any('random_init' in o for o in probe.outputs)
    # ... and the report is told of no random-init baseline it could not find (it stopped with "not a row" before)
    report = rb.build_stages(args, preset, work)[-1]
    assert '--baseline' not in report.cmd
    assert report.cmd[2:4] == [str(work / 'pretrain_sdae'), str(work / 'pretrain_mae')]
    mae_only = rb.build_stages(args, rb.replace(rb.PRESETS['demo'], inits=('mae', 'random')), work)[-1].cmd
    assert str(work / 'pretrain_sdae') not in mae_only and mae_only[mae_only.index('--baseline') + 1] == 'random'


def test_demo_fine_tunes_leave_the_final_evaluation_to_the_test_stage(monkeypatch, tmp_path):
    """mmengine's IterBasedTrainLoop validates at the last iteration whatever val_interval says: the demo's training
    stages push val_begin past the end, the test stages evaluate; demo-long keeps its validation curve."""
    monkeypatch.setenv('SDAE_DEMO_BUDGET', '')
    args = argparse.Namespace(gpus=1, data_root=tmp_path / 'data', imagenet=None, coco=None, ade=None)
    for preset, skipped in (('demo', True), ('demo-long', False)):
        stages = rb.build_stages(args, rb.PRESETS[preset], tmp_path / preset)
        train = [s for s in stages if s.name.startswith(('det-', 'seg-')) and not s.name.endswith('-test')]
        assert len(train) == 3 * len(rb.PRESETS[preset].seeds) * 2
        assert all(('train_cfg.val_begin=1000000000' in s.cmd) == skipped for s in train)
    from mmengine.config import Config
    for cfg in ('det_configs/sdae_maskrcnn_demo.py', 'seg_configs/sdae_upernet_demo.py'):
        loop = Config.fromfile(str(rb.ROOT / cfg)).train_cfg
        assert loop.max_iters < 1000000000 and loop.get('val_begin', 1) <= loop.max_iters  # the config alone validates


def test_full_preset_probes_imagenet_and_ade_with_caps(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv('SDAE_DEMO_BUDGET', '')
    args = argparse.Namespace(gpus=8, data_root=tmp_path / 'data', imagenet=tmp_path / 'in1k', coco=tmp_path / 'coco',
                              ade=tmp_path / 'ade')
    probe = next(s for s in rb.build_stages(args, rb.PRESETS['full'], tmp_path / 'w') if s.name == 'probes')
    cmd = ' '.join(probe.cmd)
    assert f'--cls-data {tmp_path / "in1k" / "train"} --seg-data {tmp_path / "ade"} --seg-classes 150' in cmd
    assert '--max-seg-train 1000' in cmd and '--data ' not in cmd
    # Random init alone: no checkpoint to take the architecture from, so no probe stage, and the pipeline says so.
    stages = rb.build_stages(args, rb.replace(rb.PRESETS['demo'], inits=('random',)), tmp_path / 'w')
    assert 'probes' not in [s.name for s in stages] and 'no probe stage' in capsys.readouterr().out
    assert str(tmp_path / 'w' / 'probes') not in stages[-1].cmd


def test_config_digest_follows_base_files(tmp_path):
    (tmp_path / '_base_').mkdir()
    (tmp_path / '_base_' / 'sched.py').write_text('max_iters = 10\n')
    top = tmp_path / 'top.py'
    # Not valid Python until mmengine substitutes {{_base_.x}}: the digest must not need to parse it.
    top.write_text("_base_ = ['mmdet::_base_/default_runtime.py', './_base_/sched.py']\nx = {{_base_.max_iters}}\n")
    before = config_digest(top)
    (tmp_path / '_base_' / 'sched.py').write_text('max_iters = 20\n')
    assert config_digest(top) != before


FIRST = r'''
import sys; from pathlib import Path
from sdae_suite.commands import run_benchmark as rb
slow = rb.Stage('slow', [sys.executable, '-c', 'import time; time.sleep(300)'], 1.0)
sys.exit(rb.run([slow], Path(sys.argv[1])))
'''


def test_second_pipeline_on_a_work_dir_stops_naming_the_first(tmp_path):
    work = tmp_path / 'work'
    env = dict(os.environ)
    first = subprocess.Popen([PY, '-c', FIRST, str(work)], cwd=ROOT, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while not (work / 'stages' / 'slow.started').is_file():
            assert first.poll() is None and time.time() - t0 < 60, 'the first pipeline did not start its stage'
            time.sleep(0.05)
        t0 = time.time()
        second = subprocess.run([PY, 'tools/run_benchmark.py', '--work-dir', str(work), '--data-root',
                                 str(tmp_path / 'data')], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 1 and time.time() - t0 < 30
        assert f'[benchmark] another pipeline is running in {work}: PID {first.pid} on ' in second.stderr
        assert '[benchmark] stage' not in second.stdout and not (work / 'stages' / 'data.started').exists()

        # kill -9 of the pipeline alone: the stage it left running still holds the work dir.
        first.send_signal(signal.SIGKILL)
        first.wait()
        with pytest.raises(WorkDirLocked, match=f'PID {first.pid} has ended, but a stage process it started still '
                                                'holds the lock'):
            with work_dir_lock(work, orphan_grace_s=0.5):
                pass
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the stage too
        first.wait()
    t0 = time.time()
    while True:  # the kernel releases the lock once the last holder is gone
        try:
            with work_dir_lock(work):
                break
        except WorkDirLocked:
            assert time.time() - t0 < 10, 'the lock outlived every process that held it'
            time.sleep(0.05)


def test_stages_run_with_the_pipelines_interpreter(tmp_path):
    # A Python that is neither .venv/bin/python nor python3 on PATH, as a user's conda or system environment is.
    other = tmp_path / 'env'
    subprocess.run([PY, '-m', 'venv', '--without-pip', str(other)], check=True)
    other_py = other / 'bin' / 'python'
    probe = r'''
import sys; from pathlib import Path
from sdae_suite.commands import run_benchmark as rb
launcher = rb.Stage('probe', ['bash', 'tools/run_benchmark.sh', '--dry-run', '--work-dir', sys.argv[1]], 1.0)
sys.exit(rb.run([launcher], Path(sys.argv[1])))
'''
    env = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
    # That environment holds the stack and the suite, as a user's would: here this one's site-packages, added as a
    # site directory (so that the suite's editable install, a .pth file there, works in it too).
    import sysconfig

    site_dir = next((other / 'lib').glob('python*/site-packages'))
    (site_dir / 'stack.pth').write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    proc = subprocess.run([str(other_py), '-c', probe, str(tmp_path / 'work')], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # The dry run the launcher started lists the stages with the interpreter it runs with.
    assert f'{other_py} tools/make_demo_data.py' in proc.stdout
    assert '.venv/bin/python' not in proc.stdout


def test_launchers_refuse_a_python_that_does_not_exist(tmp_path):
    proc = subprocess.run(['bash', 'tools/dist_train.sh', 'cfg.py', '1'], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, 'PYTHON': str(tmp_path / 'nope')})
    assert proc.returncode == 2
    assert proc.stderr == (f'dist_train.sh: PYTHON={tmp_path / "nope"} is not an executable; point it at the '
                           "environment's python or unset it\n")
    proc = subprocess.run(['bash', 'tools/dist_test.sh', 'cfg.py'], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith('usage: dist_test.sh CONFIG CKPT GPUS')


@pytest.mark.parametrize('preset', ['demo', 'full'])
def test_det_evaluator_reads_the_annotations_the_validation_set_reads(tmp_path, preset):
    """mmdet's CocoMetric opens its ann_file by a full path: the pipeline points it at the file the config's validation
    dataset reads under the same root (COCO 2017's instances_val2017.json for the full preset, not the demo's name)."""
    from mmengine.config import Config

    args = argparse.Namespace(gpus=8, data_root=tmp_path / 'demo', imagenet=tmp_path / 'in1k', coco=tmp_path / 'c',
                              ade=tmp_path / 'a', probe_seeds=None)
    p = rb.PRESETS[preset]
    det = next(s for s in rb.build_stages(args, p, tmp_path / preset)
               if s.name.startswith('det-') and not s.name.endswith('-test'))
    cfg = Config.fromfile(str(ROOT / p.det))
    root = args.data_root / 'coco' if p.demo_data else args.coco
    want = f'{root}/{cfg.val_dataloader.dataset.ann_file}'
    assert f'val_evaluator.ann_file={want}' in det.cmd and f'test_evaluator.ann_file={want}' in det.cmd
