"""tools/slurm_pretrain.sh and tools/slurm_train.sh on preemption, with ``srun`` and ``scontrol`` replaced by recording
stubs (no Slurm here): the signal is requested ahead of the limit, a preempted run (exit status 75, or a
run_status.json that says so when srun reports a killed task's status) is requeued inside a job and run again with
--resume outside one, a requeued job resumes by itself, and any other failure is passed on untouched."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdae_suite.contracts import EXIT_PREEMPTED

ROOT = Path(__file__).resolve().parents[1]

# srun stub: logs its argv, then plays the next line of plan.txt: "<exit status> [preempted-status]". With
# "preempted-status" it writes <work_dir>/run_status.json with status 'preempted', as the real run's rank 0 does.
SRUN = r'''#!/usr/bin/env python3
import json, os, sys
from pathlib import Path
d = Path(os.environ['STUB_DIR'])
with open(d / 'calls.jsonl', 'a') as f:
    f.write(json.dumps(['srun'] + sys.argv[1:]) + '\n')
plan = (d / 'plan.txt').read_text().splitlines()
step = sum(1 for line in (d / 'calls.jsonl').read_text().splitlines() if json.loads(line)[0] == 'srun') - 1
rc, *flags = plan[step].split()
if 'preempted-status' in flags:
    work = Path(os.environ['STUB_WORK'])
    work.mkdir(parents=True, exist_ok=True)
    (work / 'run_status.json').write_text(json.dumps({'status': 'preempted', 'iteration': 7}))
sys.exit(int(rc))
'''
SCONTROL = r'''#!/usr/bin/env python3
import json, os, sys
from pathlib import Path
d = Path(os.environ['STUB_DIR'])
with open(d / 'calls.jsonl', 'a') as f:
    f.write(json.dumps(['scontrol'] + sys.argv[1:]) + '\n')
sys.exit(int(os.environ.get('SCONTROL_RC', '0')))
'''


@pytest.fixture
def slurm(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, body in (('srun', SRUN), ('scontrol', SCONTROL)):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    work = tmp_path / 'work'

    def run(script: str, plan: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, list]:
        (tmp_path / 'plan.txt').write_text('\n'.join(plan) + '\n')
        (tmp_path / 'calls.jsonl').unlink(missing_ok=True)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
        full_env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", STUB_DIR=str(tmp_path), STUB_WORK=str(work),
                        PYTHON=sys.executable, **(env or {}))
        if script == 'pretrain':
            argv = ['bash', str(ROOT / 'tools/slurm_pretrain.sh'), 'gpu', 'job', 'cfg.py', '--work-dir', str(work)]
        else:
            argv = ['bash', str(ROOT / 'tools/slurm_train.sh'), 'gpu', 'job', 'cfg.py', str(work), '--pretrained',
                    'b.pth']
        proc = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        calls = [json.loads(line) for line in (tmp_path / 'calls.jsonl').read_text().splitlines()]
        return proc, calls

    return run


@pytest.mark.parametrize('script', ['pretrain', 'train'])
def test_outside_a_job_a_preempted_run_is_started_again_with_resume(slurm, script):
    proc, calls = slurm(script, ['75', '75', '0'])
    assert proc.returncode == 0, proc.stderr
    assert [c[0] for c in calls] == ['srun'] * 3  # no scontrol outside a job
    first, second, third = (c[1:] for c in calls)
    assert first[0] == '--signal=USR1@120' and '--kill-on-bad-exit=1' in first
    assert first[-1] != '--resume' and second[-1] == '--resume' and third[-1] == '--resume'
    assert second[:-1] == first  # the same command line, plus --resume
    assert 'starting again with --resume (restart 2)' in proc.stderr


def test_inside_a_job_the_job_is_requeued_and_the_requeued_job_resumes(slurm):
    proc, calls = slurm('pretrain', ['75'], env={'SLURM_JOB_ID': '4242'})
    assert proc.returncode == EXIT_PREEMPTED
    assert calls[0][0] == 'srun' and calls[1] == ['scontrol', 'requeue', '4242'] and len(calls) == 2
    assert 'requeued job 4242, which resumes from it' in proc.stderr
    # Slurm starts the same script again, with SLURM_RESTART_COUNT set: it resumes by itself
    proc, calls = slurm('pretrain', ['0'], env={'SLURM_JOB_ID': '4242', 'SLURM_RESTART_COUNT': '1'})
    assert proc.returncode == 0 and len(calls) == 1 and calls[0][-1] == '--resume'
    assert 'job requeued 1 time(s): resuming from the last checkpoint' in proc.stderr


def test_a_refused_requeue_falls_back_to_running_srun_again(slurm):
    proc, calls = slurm('train', ['75', '0'], env={'SLURM_JOB_ID': '7', 'SCONTROL_RC': '1'})
    assert proc.returncode == 0
    assert [c[0] for c in calls] == ['srun', 'scontrol', 'srun'] and calls[2][-1] == '--resume'
    assert 'scontrol requeue 7 was refused; running srun again instead' in proc.stderr


def test_killed_tasks_exit_status_with_a_preempted_record_still_requeues(slurm):
    """--kill-on-bad-exit kills the ranks still tearing down after the first exits with 75; srun may then report
    137. The run's status file, written at this start, says preempted: the run is requeued all the same."""
    proc, calls = slurm('pretrain', ['137 preempted-status', '0'])
    assert proc.returncode == 0 and len(calls) == 2 and calls[1][-1] == '--resume'


@pytest.mark.parametrize('plan', [['1'], ['137']], ids=['failed', 'killed'])
def test_other_failures_are_not_requeued(slurm, plan, tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'run_status.json').write_text(json.dumps({'status': 'preempted'}))
    os.utime(work / 'run_status.json', (1, 1))  # a preemption record from an earlier run does not count
    proc, calls = slurm('pretrain', plan, env={'SLURM_JOB_ID': '9'})
    assert proc.returncode == int(plan[0]) and len(calls) == 1  # no scontrol, no second srun


def test_requeues_are_bounded(slurm):
    proc, calls = slurm('pretrain', ['75'] * 3, env={'MAX_REQUEUES': '2'})
    assert proc.returncode == EXIT_PREEMPTED and len(calls) == 3
    assert 'preempted 3 times; giving up (MAX_REQUEUES=2)' in proc.stderr
