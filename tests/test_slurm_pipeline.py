"""tools/run_benchmark.py --slurm: one sbatch job per stage, chained by the stage graph's dependencies, resubmitting
only what failed; and the local pipeline's handling of a preempted stage. sbatch, squeue, sacct, scancel, scontrol and
srun are recording stubs on PATH (a small fake Slurm: job states in a JSON file the test edits)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sdae_suite.commands import run_benchmark as rb
from sdae_suite.contracts import EXIT_PREEMPTED
from sdae_suite.pipeline import slurm
from sdae_suite.pipeline.graph import check_graph, critical_path, dependants
from sdae_suite.pipeline.state import LAST

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# One stub for every Slurm command (by the name it is called as): appends [name, *argv] to calls.jsonl and answers as
# Slurm does. states.json maps job id -> state; sbatch adds PENDING jobs, scancel makes them CANCELLED.
STUB = r'''#!{py}
import json, os, sys
from pathlib import Path
d = Path(os.environ['FAKE_SLURM'])
name, argv = Path(sys.argv[0]).name, sys.argv[1:]
with open(d / 'calls.jsonl', 'a') as f:
    f.write(json.dumps([name, *argv]) + '\n')
states_file = d / 'states.json'
states = json.loads(states_file.read_text()) if states_file.exists() else {{}}
active = {{'PENDING', 'RUNNING', 'REQUEUED'}}
if name == 'sbatch':
    job = str(1001 + len(states))
    states[job] = 'PENDING'
    states_file.write_text(json.dumps(states))
    print(job if '--parsable' in argv else f'Submitted batch job {{job}}')
elif name == 'squeue':
    ids = next(a.split('=', 1)[1] for a in argv if a.startswith('--jobs=')).split(',')
    print('\n'.join(f'{{j}}|{{states[j]}}' for j in ids if states.get(j) in active))
elif name == 'sacct':
    ids = argv[argv.index('-j') + 1].split(',')
    print('\n'.join(f'{{j}}|{{states[j]}}' + (' by 1000' if states[j] == 'CANCELLED' else '')
                    for j in ids if j in states and states[j] not in active))
elif name == 'scancel':
    states.update({{j: 'CANCELLED' for j in argv}})
    states_file.write_text(json.dumps(states))
elif name == 'scontrol' and argv[:2] == ['show', 'hostnames']:
    print('node1\nnode2')
elif name == 'srun':  # run the step's command here: what follows srun's own options
    cmd = argv[next(i for i, a in enumerate(argv) if not a.startswith('-')):]
    os.execvp(cmd[0], cmd)
'''
SLURM_COMMANDS = ('sbatch', 'squeue', 'sacct', 'scancel', 'scontrol', 'srun')


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    d = tmp_path / 'fake_slurm'
    (d / 'bin').mkdir(parents=True)
    for name in SLURM_COMMANDS:
        stub = d / 'bin' / name
        stub.write_text(STUB.format(py=PY))
        stub.chmod(0o755)
    monkeypatch.setenv('FAKE_SLURM', str(d))
    monkeypatch.setenv('PATH', f'{d / "bin"}{os.pathsep}{os.environ["PATH"]}')
    monkeypatch.delenv('SLURM_JOB_ID', raising=False)
    monkeypatch.setenv('SDAE_DEMO_BUDGET', '')
    return d


def calls(d: Path, name: str | None = None) -> list[list[str]]:
    path = d / 'calls.jsonl'
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r[1:] for r in rows if name is None or r[0] == name]


def set_states(d: Path, **by_job: str) -> None:
    states = json.loads((d / 'states.json').read_text())
    states.update(by_job)
    (d / 'states.json').write_text(json.dumps(states))


def opt(argv: list[str], key: str) -> str | None:
    return next((a.split('=', 1)[1] for a in argv if a.startswith(f'{key}=')), None)


def submitted(d: Path, first: int = 0) -> dict[str, tuple[str, list[str], list[str]]]:
    """stage -> (job id, its dependency job ids, sbatch argv) of the sbatch calls from the `first`-th on."""
    out = {}
    jobs = json.loads((d / 'states.json').read_text())
    ids = sorted(jobs, key=int)
    for n, argv in enumerate(calls(d, 'sbatch')):
        if n < first:
            continue
        dep = opt(argv, '--dependency')
        out[opt(argv, '--job-name').removeprefix('sdae:')] = (ids[n], dep.split(':')[1:] if dep else [], argv)
    return out


def full(tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    code = rb.main(['--preset', 'full', '--gpus', '8', '--work-dir', str(tmp_path / 'work'),
                    '--imagenet', str(tmp_path / 'in1k'), '--coco', str(tmp_path / 'coco'),
                    '--ade', str(tmp_path / 'ade'),
                    '--slurm', 'gpu', '--nodes-per-job', '2', '--time', '24:00:00', '--account', 'proj',
                    '--qos', 'high', '--sbatch-arg=--cpus-per-task=10', *extra])
    return code, capsys.readouterr().out


def full_stages(tmp_path: Path) -> list[rb.Stage]:
    args = rb.argparse.Namespace(gpus=8, data_root=None, imagenet=tmp_path / 'in1k', coco=tmp_path / 'coco',
                                 ade=tmp_path / 'ade')
    return rb.build_stages(args, rb.PRESETS['full'], tmp_path / 'work')


def test_full_preset_submits_one_job_per_stage_chained_by_the_graph(fake_slurm, tmp_path, capsys):
    code, out = full(tmp_path, capsys)
    assert code == 0, out
    jobs = submitted(fake_slurm)
    stages = full_stages(tmp_path)
    assert sorted(jobs) == sorted(s.name for s in stages) and len(jobs) == 32
    name_of = {job: stage for stage, (job, _, _) in jobs.items()}
    deps = {stage: {name_of[j] for j in ids} for stage, (_, ids, _) in jobs.items()}
    for stage, (job, ids, argv) in jobs.items():
        assert all(int(j) < int(job) for j in ids), f'{stage} was submitted before a job it depends on'
        assert {'--parsable', '--requeue', '--signal=USR1@120', '--partition=gpu', '--time=24:00:00',
                '--account=proj', '--qos=high', '--kill-on-invalid-dep=yes'} <= set(argv)
        assert argv[-2:] == ['--cpus-per-task=10', str(tmp_path / 'work' / 'slurm' / 'jobs' / f'{stage}.sh')]
        training = re.fullmatch(r'(pretrain-\w+|(det|seg|cls_ft|cls_linear)-\w+-seed0)', stage)
        assert opt(argv, '--nodes') == ('2' if training else '1'), stage
        assert (opt(argv, '--gres') == 'gpu:8') == bool(training or stage.endswith('-test')), stage
    for task in ('det', 'seg', 'cls_ft', 'cls_linear'):
        for init in ('sdae', 'mae'):
            assert deps[f'{task}-{init}-seed0'] == {f'export-{init}'}
            assert opt(jobs[f'{task}-{init}-seed0'][2], '--dependency').startswith('afterok:')
        assert deps[f'{task}-random-seed0'] == set()  # random init waits for no pretraining
        for init in ('sdae', 'mae', 'random'):
            assert deps[f'{task}-{init}-seed0-test'] == {f'{task}-{init}-seed0'}
    assert deps['export-sdae'] == {'pretrain-sdae'} and deps['pretrain-sdae'] == deps['pretrain-mae'] == set()
    assert deps['probes'] == deps['visualize-features'] == {'export-sdae', 'export-mae'}
    assert deps['report'] == set(jobs) - {'report'}
    assert opt(jobs['report'][2], '--dependency').startswith('afterany:')  # runs after failures too, shows them
    # printed: stage -> job id -> depends on; the ids are remembered in the work dir
    assert re.search(rf'det-sdae-seed0 +{jobs["det-sdae-seed0"][0]} +submitted +afterok: export-sdae '
                     rf'\({jobs["export-sdae"][0]}\)', out)
    remembered = json.loads((tmp_path / 'work' / 'slurm' / 'jobs.json').read_text())['jobs']
    assert {s: r['job_id'] for s, r in remembered.items()} == {s: j[0] for s, j in jobs.items()}
    script = (tmp_path / 'work' / 'slurm' / 'jobs' / 'det-sdae-seed0.sh').read_text()
    assert '--slurm-job det-sdae-seed0' in script and 'scontrol requeue "$SLURM_JOB_ID"' in script
    job_stage = json.loads((tmp_path / 'work' / 'slurm' / 'stages' / 'det-sdae-seed0.json').read_text())
    assert rb.Stage.from_json(job_stage) == next(s for s in stages if s.name == 'det-sdae-seed0')


def test_critical_path_and_serial_sum_come_from_the_presets_estimates(fake_slurm, tmp_path, capsys):
    est = rb.PRESETS['full'].est
    stages = full_stages(tmp_path)
    serial = sum(s.est_s for s in stages)
    # the longest chain: pretraining, export, the longest fine-tuning and its test, the prediction pictures, the report
    chain = est['pretrain'] + est['export'] + est['cls_ft'] + est['cls_ft_test'] + est['visualize'] + est['report']
    assert critical_path(stages) == (chain, ['pretrain-sdae', 'export-sdae', 'cls_ft-sdae-seed0',
                                             'cls_ft-sdae-seed0-test', 'visualize-predictions', 'report'])
    code, out = full(tmp_path, capsys, '--dry-run')
    assert code == 0 and not calls(fake_slurm, 'sbatch')  # a dry run submits nothing
    assert (f'estimated time of the 32 stage(s) to run: {slurm.fmt_long(serial)} one after another, '
            f'{slurm.fmt_long(chain)} on the critical path') in out
    assert chain < serial / 3  # the point of the graph: days, not weeks
    code, out = full(tmp_path, capsys)
    assert code == 0 and f'{slurm.fmt_long(chain)} on the critical path' in out


def test_rerun_keeps_queued_and_running_jobs(fake_slurm, tmp_path, capsys):
    assert full(tmp_path, capsys)[0] == 0
    first = submitted(fake_slurm)
    set_states(fake_slurm, **{first['pretrain-sdae'][0]: 'RUNNING', first['det-random-seed0'][0]: 'RUNNING'})
    code, out = full(tmp_path, capsys)
    assert code == 0, out
    assert len(calls(fake_slurm, 'sbatch')) == 32 and not calls(fake_slurm, 'scancel')  # nothing resubmitted
    assert re.search(rf'pretrain-sdae +{first["pretrain-sdae"][0]} +kept \(running\)', out)
    assert re.search(rf'report +{first["report"][0]} +kept \(pending\)', out)
    # squeue answered for every job; sacct was not needed
    assert calls(fake_slurm, 'squeue') and not calls(fake_slurm, 'sacct')


def test_failed_job_is_resubmitted_with_its_dependants_only(fake_slurm, tmp_path, capsys):
    assert full(tmp_path, capsys)[0] == 0
    first = submitted(fake_slurm)
    failed = first['export-sdae'][0]
    # export-sdae FAILED (squeue has forgotten it; sacct knows); pretrain-sdae finished its job, but its record
    # does not hold here, as it would not after a job that ended early: it is left to the state the test gives it
    set_states(fake_slurm, **{failed: 'FAILED', first['pretrain-sdae'][0]: 'RUNNING',
                              first['pretrain-mae'][0]: 'RUNNING'})
    code, out = full(tmp_path, capsys)
    assert code == 0, out
    again = submitted(fake_slurm, first=32)
    stages = full_stages(tmp_path)
    want = dependants(stages, ['export-sdae'])
    assert set(again) == want
    assert {'probes', 'report', 'visualize-predictions', 'det-sdae-seed0-test'} <= want
    assert not want & {'pretrain-sdae', 'export-mae', 'det-mae-seed0', 'det-random-seed0'}
    assert f'export-sdae: job {failed} ended FAILED without finishing the stage' in out
    assert 'det-sdae-seed0: job ' in out and 'cancelled: it needs export-sdae, submitted again' in out
    # the dependants' old jobs (waiting on a dependency that can never be met) are cancelled, none of the others
    [cancelled] = calls(fake_slurm, 'scancel')
    assert sorted(cancelled) == sorted(first[s][0] for s in want - {'export-sdae'})
    # the new jobs chain to the kept ones and to each other
    assert again['export-sdae'][1] == [first['pretrain-sdae'][0]]
    assert again['det-sdae-seed0'][1] == [again['export-sdae'][0]]
    assert set(again['report'][1]) == {again.get(s, first[s])[0] for s in first if s != 'report'}
    # sacct was asked about the job squeue no longer knows, only that one
    [sacct] = calls(fake_slurm, 'sacct')
    assert sacct[sacct.index('-j') + 1] == failed

    # A third run with every new job queued: nothing moves.
    assert full(tmp_path, capsys)[0] == 0 and len(calls(fake_slurm, 'sbatch')) == 32 + len(want)


def test_graph_covers_every_file_a_stage_reads(tmp_path):
    for preset in ('demo', 'demo-long', 'full'):
        args = rb.argparse.Namespace(gpus=1, data_root=tmp_path / 'd', imagenet=tmp_path / 'i', coco=tmp_path / 'c',
                                     ade=tmp_path / 'a')
        stages = rb.build_stages(args, rb.PRESETS[preset], tmp_path / preset)
        check_graph(stages)  # raises on a need missing
        names = [s.name for s in stages]
        assert stages[-1].needs == tuple(names[:-1])
    a = rb.Stage('a', ['true'], 1.0, outputs=[str(tmp_path / 'wd' / 'last_checkpoint')])
    b = rb.Stage('b', ['true'], 1.0, inputs=[f'{LAST}{tmp_path / "wd"}'])
    with pytest.raises(ValueError, match=f'stage b reads {tmp_path / "wd" / "last_checkpoint"}, written by stage a, '
                                         'but does not list a in its needs'):
        check_graph([a, b])
    with pytest.raises(ValueError, match="stage a needs 'b', which is not a stage listed before it"):
        check_graph([rb.replace(a, needs=('b',)), rb.replace(b, needs=('a',))])


# A training stage in miniature, as tests/test_pipeline_state.py has it, that can also be preempted: with the file
# PREEMPT present it saves a checkpoint at +2 iterations and stops as a preempted run does, by exit status 75 (MODE
# 'exit') or, as under torchrun, by exit status 1 with run_status.json saying 'preempted' (MODE 'status').
TRAIN = r'''
import json, sys; from pathlib import Path
wd, iters, flags = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
wd.mkdir(parents=True, exist_ok=True)
ckpt = wd / 'ckpt.txt'
start = int(ckpt.read_text()) if ckpt.is_file() else 0
with open(wd / 'train.log', 'a') as log:
    log.write(f'resumed from {start}\n' if start else 'from scratch\n')
mode = (flags / 'PREEMPT').read_text() if (flags / 'PREEMPT').exists() else ''
ckpt.write_text(str(start + 2 if mode else iters))
(wd / 'last_checkpoint').write_text(str(ckpt))
if mode == 'status':
    (wd / 'run_status.json').write_text(json.dumps({'status': 'preempted', 'checkpoint': str(ckpt),
                                                     'iteration': start + 2}))
if mode == 'lost':  # what RankHeartbeatHook records, then the collective timeout's error
    (wd / 'run_status.json').write_text(json.dumps({'status': 'failed', 'error': 'rank 1 on host n7 (pid 5) stopped '
                                                    'answering: no heartbeat for 21 s. Then: RuntimeError: timeout'}))
sys.exit({'exit': 75, 'status': 1, 'fail': 1, 'lost': 1}.get(mode, 0))
'''
TEST = r'''
import json, sys; from pathlib import Path
ckpt, out = Path(sys.argv[1]), Path(sys.argv[2])
out.write_text(json.dumps({'iters': int(ckpt.read_text())}))
'''


def fake_stages(tmp: Path) -> list[rb.Stage]:
    wd = tmp / 'work' / 'train'
    return [rb.Stage('train', [PY, '-c', TRAIN, str(wd), '10', str(tmp)], 1.0, outputs=[str(wd / 'last_checkpoint')],
                     work_dir=wd, resources='train'),
            rb.Stage('train-test', [PY, '-c', TEST, f'{LAST}{wd}', str(wd / 'test_results.json')], 1.0,
                     inputs=[f'{LAST}{wd}'], outputs=[str(wd / 'test_results.json')], needs=('train',),
                     resources='gpu')]


def test_local_pipeline_reports_a_preempted_stage_as_interrupted(tmp_path, capfd):
    wd = tmp_path / 'work' / 'train'
    (tmp_path / 'PREEMPT').write_text('exit')  # exit status 75
    assert rb.run(fake_stages(tmp_path), tmp_path / 'work') == EXIT_PREEMPTED
    out, err = capfd.readouterr()
    assert ('[benchmark] stage train interrupted (preempted) after 0m00s: rerun the same command to resume it. '
            'Finished stages are kept.') in out
    assert 'FAILED' not in out + err and not (tmp_path / 'work' / 'stages' / 'train.done').exists()

    (tmp_path / 'PREEMPT').write_text('status')  # torchrun's exit status 1, run_status.json says 'preempted'
    assert rb.run(fake_stages(tmp_path), tmp_path / 'work') == EXIT_PREEMPTED
    out, err = capfd.readouterr()
    assert 'stage train interrupted (preempted, checkpoint at iteration 4)' in out and 'FAILED' not in err

    # A 'preempted' run_status.json left by an earlier run does not excuse a real failure.
    (tmp_path / 'PREEMPT').write_text('fail')
    os.utime(wd / 'run_status.json', (1, 1))
    assert rb.run(fake_stages(tmp_path), tmp_path / 'work') == 1
    out, err = capfd.readouterr()
    assert 'stage train FAILED (exit code 1)' in err and 'interrupted' not in out

    (tmp_path / 'PREEMPT').unlink()
    assert rb.run(fake_stages(tmp_path), tmp_path / 'work') == 0
    assert (wd / 'train.log').read_text() == ('from scratch\nresumed from 2\nresumed from 4\nresumed from 6\n')
    assert json.loads((wd / 'test_results.json').read_text()) == {'iters': 10}


def test_local_pipeline_prints_what_a_failed_run_recorded(tmp_path, capfd):
    (tmp_path / 'PREEMPT').write_text('lost')
    assert rb.run(fake_stages(tmp_path), tmp_path / 'work') == 1
    err = capfd.readouterr().err
    assert ('stage train FAILED (exit code 1) after 0m00s. Its run recorded: rank 1 on host n7 (pid 5) stopped '
            'answering: no heartbeat for 21 s. Then: RuntimeError: timeout Fix the cause') in err


def test_slurm_job_requeues_itself_when_preempted_and_resumes(fake_slurm, tmp_path, capfd, monkeypatch):
    work, wd = tmp_path / 'work', tmp_path / 'work' / 'train'
    stages = fake_stages(tmp_path)
    checks, pending = rb._plan(stages, work / 'stages')
    opts = slurm.SlurmOptions(partition='p', gpus=4, nodes_per_job=2)
    assert slurm.submit(stages, work, opts, checks, pending, ROOT) == 0
    train_job, test_job = (json.loads((work / 'slurm' / 'jobs.json').read_text())['jobs'][s]['job_id']
                           for s in ('train', 'train-test'))
    assert opt(calls(fake_slurm, 'sbatch')[1], '--dependency') == f'afterok:{train_job}'

    # The job, as Slurm starts it, on 2 nodes: the stage is preempted (exit status 75) -> the job requeues itself.
    (tmp_path / 'PREEMPT').write_text('exit')
    env = {**os.environ, 'SLURM_JOB_ID': train_job, 'SLURM_JOB_NUM_NODES': '2', 'SLURM_JOB_NODELIST': 'node[1-2]'}
    proc = subprocess.run(['bash', str(work / 'slurm' / 'jobs' / 'train.sh')], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, proc.stdout + proc.stderr
    assert ['requeue', train_job] in calls(fake_slurm, 'scontrol')
    assert f'requeueing job {train_job} to resume it' in proc.stdout
    [step] = calls(fake_slurm, 'srun')  # the stage ran as a job step on both nodes (what --signal reaches)
    assert step[:5] == ['--nodes=2', '--ntasks=2', '--ntasks-per-node=1', '--kill-on-bad-exit=1', 'bash']
    assert step[step.index('stage') + 1:][:2] == [PY, '-c']

    # Requeued: the same job starts again and resumes from the checkpoint (here in this process, job id unchanged).
    (tmp_path / 'PREEMPT').unlink()
    monkeypatch.setenv('SLURM_JOB_ID', train_job)
    assert rb.run_slurm_job(work, 'train') == 0
    assert (wd / 'train.log').read_text() == 'from scratch\nresumed from 2\n'
    assert json.loads((work / 'stages' / 'train.done').read_text())['slurm_job'] == train_job

    # Rerun of the submission: the finished stage's record holds (no job); the queued test job is kept.
    set_states(fake_slurm, **{train_job: 'COMPLETED'})
    checks, pending = rb._plan(stages, work / 'stages')
    capfd.readouterr()
    assert slurm.submit(stages, work, opts, checks, pending, ROOT) == 0
    out = capfd.readouterr().out
    assert len(calls(fake_slurm, 'sbatch')) == 2 and '1/2 stages already finished' in out
    assert re.search(rf'train-test +{test_job} +kept \(pending\) +-', out)
