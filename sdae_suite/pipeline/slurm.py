"""`tools/run_benchmark.py --slurm PARTITION`: one sbatch job per stage still to run, chained by Slurm's own job
dependencies (``afterok`` on the jobs of the stages it needs; ``afterany`` for the report, which shows what failed).
Slurm is the scheduler: nothing here waits for a job.

Each job runs ``run_benchmark.py --slurm-job STAGE``, which keeps the same stage records as the local pipeline
(``<work>/stages/``). Jobs get ``--requeue --signal=USR1@120``: a training stage writes a checkpoint on the signal and
exits with EXIT_PREEMPTED; the job script then requeues its own job, which resumes (stage commands pass --resume).

The ids of submitted jobs are kept in ``<work>/slurm/jobs.json`` (atomic writes). A rerun asks squeue (then sacct, for
jobs squeue has forgotten) for their state: a queued or running job is kept, a job that ended without its stage's
record holding is resubmitted, with every stage that needs it (their old jobs, waiting on a dependency that can no
longer be met, are cancelled).
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sdae_suite.contracts import EXIT_PREEMPTED
from sdae_suite.engine.atomic import atomic_write_json, atomic_write_text
from sdae_suite.pipeline.graph import critical_path
from sdae_suite.pipeline.state import read_record, recipe_key

SLURM_DIR = 'slurm'
JOBS_FILE = 'jobs.json'
JOBS_FORMAT = 'sdae-suite/slurm-jobs'
# Job states (squeue's and sacct's names) of a job that has not ended: a requeued job is pending again, same id.
ACTIVE = frozenset({'PENDING', 'RUNNING', 'REQUEUED', 'REQUEUE_HOLD', 'REQUEUE_FED', 'RESIZING', 'SUSPENDED',
                    'CONFIGURING', 'COMPLETING', 'STAGE_OUT', 'SIGNALING', 'SPECIAL_EXIT', 'RESV_DEL_HOLD'})
PREEMPT_SIGNAL = 'USR1@120'  # 2 minutes before the time limit: enough for a training stage to write its checkpoint


class SlurmStage(Protocol):
    name: str
    needs: tuple[str, ...]
    est_s: float
    resources: str  # 'train' (--nodes-per-job nodes, GPUs), 'gpu' (one node, GPUs), 'cpu' (one node)
    after_failures: bool  # runs when its needs have ended, whether they succeeded or not (the report)

    def recipe(self) -> dict[str, Any]: ...
    def to_json(self) -> dict[str, Any]: ...


@dataclass
class SlurmOptions:
    partition: str
    gpus: int = 1  # per node: the stage commands' GPUS
    nodes_per_job: int = 1
    time: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch_args: tuple[str, ...] = ()


def slurm_dir(work: Path) -> Path:
    return work / SLURM_DIR


def stage_file(work: Path, name: str) -> Path:
    """The stage a job runs, as submitted: the job runs exactly this, whatever the command line of a later rerun."""
    return slurm_dir(work) / 'stages' / f'{name}.json'


def load_jobs(work: Path) -> dict[str, dict[str, Any]]:
    data = read_record(slurm_dir(work) / JOBS_FILE)
    jobs = (data or {}).get('jobs')
    return jobs if isinstance(jobs, dict) else {}


def save_jobs(work: Path, jobs: dict[str, dict[str, Any]]) -> None:
    # after every submission: a submission killed half way still knows every job it submitted
    atomic_write_json({'format': JOBS_FORMAT, 'jobs': jobs}, slurm_dir(work) / JOBS_FILE)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SystemExit(f'[benchmark] {cmd[0]} not found on PATH: --slurm needs the Slurm client commands (sbatch, '
                         f'squeue, sacct, scancel, scontrol); run it on a login node of the cluster') from None


def _parse_states(text: str) -> dict[str, str]:
    """'ID|STATE' lines -> {id: STATE}; sacct's 'CANCELLED by 1000' -> 'CANCELLED'; the last line of an id wins."""
    out = {}
    for line in text.splitlines():
        job, _, state = line.strip().partition('|')
        if job and state:
            out[job] = state.split()[0].rstrip('+')
    return out


def job_states(ids: Sequence[str]) -> dict[str, str]:
    """The state of each job: squeue for jobs still queued or running, sacct for jobs squeue has forgotten (it keeps
    ended jobs only a few minutes). An id neither knows is left out."""
    if not ids:
        return {}
    proc = _run(['squeue', '-h', '-o', '%i|%T', f'--jobs={",".join(ids)}'])
    if proc.returncode == 0:
        states = _parse_states(proc.stdout)
    else:  # some squeue versions refuse the whole list when one id has been purged: ask job by job
        states = {}
        for job in ids:
            one = _run(['squeue', '-h', '-o', '%i|%T', f'--jobs={job}'])
            states.update(_parse_states(one.stdout) if one.returncode == 0 else {})
    rest = [j for j in ids if j not in states]
    if rest:
        proc = _run(['sacct', '-n', '-X', '-P', '-o', 'JobID,State', '-j', ','.join(rest)])
        if proc.returncode == 0:
            states.update({j: s for j, s in _parse_states(proc.stdout).items() if j in rest})
    return states


def job_script(work: Path, name: str, root: Path, python: str) -> str:
    """The batch script of one stage. Exit status EXIT_PREEMPTED: the stage wrote a checkpoint on USR1 (time limit
    near) or on preemption; the job requeues itself and the next start resumes. The status stays non-zero so that a
    job whose requeue failed ends FAILED (and the next submission resubmits it) rather than COMPLETED."""
    run = shlex.join([python, str(root / 'tools' / 'run_benchmark.py'), '--work-dir', str(work), '--slurm-job', name])
    return f'''#!/usr/bin/env bash
# Stage {name} of the benchmark in {work}; written by tools/run_benchmark.py --slurm.
cd {shlex.quote(str(root))}
{run}
rc=$?
if [[ $rc -eq {EXIT_PREEMPTED} ]]; then
  echo "[benchmark] {name}: preempted after writing its checkpoint; requeueing job $SLURM_JOB_ID to resume it"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit $rc
'''


def sbatch_command(opts: SlurmOptions, stage: SlurmStage, script: Path, log_dir: Path,
                   dependency: list[str]) -> list[str]:
    nodes = opts.nodes_per_job if stage.resources == 'train' else 1
    cmd = ['sbatch', '--parsable', f'--job-name=sdae:{stage.name}', f'--partition={opts.partition}',
           f'--nodes={nodes}', '--ntasks-per-node=1', '--requeue', f'--signal={PREEMPT_SIGNAL}',
           # a requeued job appends to its log instead of starting it afresh
           '--open-mode=append', f'--output={log_dir / f"{stage.name}-%j.out"}',
           # a job whose dependency failed is cancelled (it ends) instead of pending forever: the report's afterany
           # then runs, and the next submission sees it CANCELLED and resubmits it
           '--kill-on-invalid-dep=yes']
    if stage.resources in ('train', 'gpu'):
        cmd.append(f'--gres=gpu:{opts.gpus}')
    cmd += [f'--time={opts.time}'] if opts.time else []
    cmd += [f'--account={opts.account}'] if opts.account else []
    cmd += [f'--qos={opts.qos}'] if opts.qos else []
    if dependency:
        kind = 'afterany' if stage.after_failures else 'afterok'
        cmd.append(f'--dependency={kind}:{":".join(dependency)}')
    return [*cmd, *opts.sbatch_args, str(script)]


def step_command(cmd: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Inside a Slurm job: the stage command as a job step, one task per node of the job. A step is what
    `--signal=USR1@120` signals (the batch shell is not), and srun starts the command on every node; the launchers
    (tools/*.sh) read torchrun's multi-node variables, NODE_RANK set per task from SLURM_NODEID."""
    if 'SLURM_JOB_ID' not in env:
        return cmd, env
    nodes = int(env.get('SLURM_JOB_NUM_NODES', '1'))
    env = {**env, 'NNODES': str(nodes), 'MASTER_PORT': str(20000 + int(env['SLURM_JOB_ID']) % 20000)}
    if nodes > 1:
        hosts = _run(['scontrol', 'show', 'hostnames', env.get('SLURM_JOB_NODELIST', '')]).stdout.split()
        env['MASTER_ADDR'] = hosts[0] if hosts else env.get('SLURMD_NODENAME', '127.0.0.1')
    return ['srun', f'--nodes={nodes}', f'--ntasks={nodes}', '--ntasks-per-node=1', '--kill-on-bad-exit=1',
            'bash', '-c', 'NODE_RANK=$SLURM_NODEID exec "$@"', 'stage', *cmd], env


def fmt_long(seconds: float) -> str:
    return f'{seconds / 3600:.0f} h ({seconds / 86400:.1f} days)'


def submit(stages: Sequence[SlurmStage], work: Path, opts: SlurmOptions, checks: dict[str, list[str] | None],
           pending: set[str], root: Path, dry_run: bool = False, say: Callable[[str], None] = print) -> int:
    """Submit a job for every stage in `pending` (those whose record does not hold, and those that need one of them)
    that has no queued or running job for the same recipe; print the graph and the critical path. `checks`: why each
    stage's record does not hold (None: it holds; []: no record)."""
    jobs = load_jobs(work)
    by_name = {s.name: s for s in stages}
    old_ids = [str(jobs[n]['job_id']) for n in pending if n in jobs]
    states = job_states(old_ids) if old_ids and not dry_run else {}
    logs = slurm_dir(work) / 'logs'
    keep, cancel = _decide(stages, jobs, states, checks, pending, logs, say)
    if cancel and not dry_run:  # one call; their stages get new jobs below
        _run(['scancel', *cancel])
    rows: list[tuple[str, str, str, list[str]]] = []  # stage, job id, what happened, needs (pending ones)
    for s in stages:
        if s.name not in pending:
            continue
        needs = [n for n in s.needs if n in pending]
        if s.name in keep:
            rows.append((s.name, str(jobs[s.name]['job_id']), f'kept ({keep[s.name].lower()})', needs))
            continue
        if dry_run:
            rows.append((s.name, '-', 'to submit', needs))
            continue
        dependency = [str(jobs[n]['job_id']) for n in needs]
        script = slurm_dir(work) / 'jobs' / f'{s.name}.sh'
        atomic_write_json(s.to_json(), stage_file(work, s.name))
        atomic_write_text(job_script(work, s.name, root, sys.executable), script)
        script.chmod(0o755)
        logs.mkdir(parents=True, exist_ok=True)
        proc = _run(sbatch_command(opts, s, script, logs, dependency))
        new_id = proc.stdout.strip().split(';')[0]  # --parsable: 'ID' or 'ID;CLUSTER'
        if proc.returncode != 0 or not new_id.isdigit():
            say(f'[benchmark] sbatch failed for stage {s.name} (exit code {proc.returncode}): '
                f'{(proc.stderr or proc.stdout).strip()}. Fix the Slurm options and rerun the same command: jobs '
                f'already submitted are kept.')
            return 1
        jobs[s.name] = {'job_id': new_id, 'key': recipe_key(s.recipe()), 'depends_on': dependency,
                        'submitted': time.strftime('%Y-%m-%d %H:%M:%S')}
        save_jobs(work, jobs)
        rows.append((s.name, new_id, 'submitted', needs))
    _print_graph(rows, by_name, jobs, len(stages), dry_run, say)
    todo = [s for s in stages if s.name in pending]
    serial = sum(s.est_s for s in todo)
    path_s, path = critical_path(todo)
    if todo:
        say(f'[benchmark] estimated time of the {len(todo)} stage(s) to run: {fmt_long(serial)} one after another, '
            f'{fmt_long(path_s)} on the critical path (every job starting as soon as its needs end; queue waits not '
            f'included): {" -> ".join(path)}')
    if not dry_run:
        say(f'[benchmark] job ids in {slurm_dir(work) / JOBS_FILE}, logs in {logs}. Rerun the same command to see '
            f'what remains: finished stages and queued or running jobs are kept, failed ones submitted again.')
    return 0


def _decide(stages: Sequence[SlurmStage], jobs: dict[str, dict[str, Any]], states: dict[str, str],
            checks: dict[str, list[str] | None], pending: set[str], logs: Path,
            say: Callable[[str], None]) -> tuple[dict[str, str], list[str]]:
    """Which pending stages keep their job ({stage: its state}) and which old jobs to cancel; says why each other
    stage gets a new job. A job is kept while it is queued or running, for the same recipe, and no stage it needs
    gets a new job (it would wait on the old one)."""
    keep: dict[str, str] = {}
    cancel: list[str] = []
    for s in stages:
        if s.name not in pending:
            continue
        old = jobs.get(s.name)
        job_id = str(old['job_id']) if old else ''
        state = states.get(job_id, 'UNKNOWN') if old else ''
        moved = [n for n in s.needs if n in pending and n not in keep]
        if old and state in ACTIVE and old.get('key') == recipe_key(s.recipe()) and not moved:
            keep[s.name] = state
            continue
        if old and state in ACTIVE:
            why = f'it needs {", ".join(moved)}, submitted again' if moved else 'its settings changed since'
            say(f'[benchmark] {s.name}: job {job_id} ({state.lower()}) cancelled: {why}')
            cancel.append(job_id)
        elif old and state == 'UNKNOWN':
            say(f'[benchmark] {s.name}: job {job_id} is unknown to squeue and sacct, and the stage has not finished: '
                f'submitted again')
        elif old and state == 'COMPLETED' and checks[s.name] is None:
            say(f'[benchmark] {s.name}: job {job_id} had finished it; submitted again after {", ".join(moved)}')
        elif old:
            say(f'[benchmark] {s.name}: job {job_id} ended {state} without finishing the stage (log: '
                f'{logs / f"{s.name}-{job_id}.out"}): submitted again')
        if checks[s.name]:
            say(f'[benchmark] {s.name} had finished; it runs again: {"; ".join(checks[s.name] or [])}')
    return keep, cancel


def _print_graph(rows: list[tuple[str, str, str, list[str]]], by_name: dict[str, SlurmStage],
                 jobs: dict[str, dict[str, Any]], total: int, dry_run: bool, say: Callable[[str], None]) -> None:
    done = total - len(rows)
    if done:
        say(f'[benchmark] {done}/{total} stages already finished (their records hold): no job')
    if not rows:
        say('[benchmark] every stage has finished: nothing to submit')
        return
    width = max(len(r[0]) for r in rows) + 2
    say(f'[benchmark] {"stage":<{width}}{"job":<10}{"":<20}depends on' + (' (dry run: nothing submitted)'
                                                                            if dry_run else ''))
    for name, job_id, what, needs in rows:
        kind = 'afterany' if by_name[name].after_failures else 'afterok'
        if not needs:
            deps = '-'
        elif len(needs) > 6:
            deps = f'{kind}: all {len(needs)} stages before it'
        else:
            deps = f'{kind}: ' + ', '.join(f'{n} ({jobs[n]["job_id"]})' if n in jobs and not dry_run else n
                                           for n in needs)
        say(f'[benchmark] {name:<{width}}{job_id:<10}{what:<20}{deps}')


def unfinished_needs(stage: SlurmStage, marks: Path) -> list[str]:
    """The stage's needs without a record of finishing: what a report job started by afterany runs without."""
    return [n for n in stage.needs if read_record(marks / f'{n}.done') is None]
