"""The pipeline's stage graph: each stage names the stages it needs (``Stage.needs``), in the one place the stages are
defined (sdae_suite/commands/run_benchmark.py). The local pipeline runs them in list order (a topological order); the
Slurm submission turns each need into a job dependency. Here: the checks that the graph is sound, and the critical
path of its time estimates."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from sdae_suite.contracts import LAST_CHECKPOINT_FILE
from sdae_suite.pipeline.state import LAST


class Node(Protocol):
    name: str
    needs: tuple[str, ...]
    est_s: float
    inputs: list[str]
    outputs: list[str]


def reads(stage: Node) -> list[str]:
    """The files a stage reads: an `@last-checkpoint:` input reads its work dir's `last_checkpoint` record."""
    return [str(Path(i[len(LAST):]) / LAST_CHECKPOINT_FILE) if i.startswith(LAST) else i for i in stage.inputs]


def check_graph(stages: Sequence[Node]) -> None:
    """Every need names an earlier stage (so list order runs needs first), and every file a stage reads that another
    stage writes comes from a stage it needs: a dependency left out of `needs` would let a Slurm job start before its
    input exists. A violation is a bug in the stage definitions: ValueError naming it."""
    seen: set[str] = set()
    producer = {o: s.name for s in stages for o in s.outputs}
    for s in stages:
        for need in s.needs:
            if need not in seen:
                raise ValueError(f'stage {s.name} needs {need!r}, which is not a stage listed before it')
        for path in reads(s):
            maker = producer.get(path)
            if maker is not None and maker != s.name and maker not in s.needs:
                raise ValueError(f'stage {s.name} reads {path}, written by stage {maker}, but does not list {maker} '
                                 f'in its needs')
        seen.add(s.name)


def dependants(stages: Sequence[Node], names: Iterable[str]) -> set[str]:
    """`names` and every stage that needs one of them, directly or not."""
    out = set(names)
    for s in stages:  # list order is topological: one pass reaches every descendant
        if any(n in out for n in s.needs):
            out.add(s.name)
    return out


def critical_path(stages: Sequence[Node]) -> tuple[float, list[str]]:
    """The longest chain of estimates through the graph (what the pipeline takes when every stage starts as soon as
    its needs end) and its stages. Needs outside `stages` (already finished) cost nothing."""
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for s in stages:
        before = [n for n in s.needs if n in finish]
        last = max(before, key=lambda n: finish[n], default=None)
        finish[s.name] = (finish[last] if last else 0.0) + s.est_s
        via[s.name] = last
    if not finish:
        return 0.0, []
    end: str | None = max(finish, key=lambda n: finish[n])
    total = finish[end]
    path = []
    while end is not None:
        path.append(end)
        end = via[end]
    return total, path[::-1]
