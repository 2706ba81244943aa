"""The report's structure: rows (one per pretrained checkpoint or published reference), cells (one per task) and the
:class:`Report` that ``sdae_suite.report.compare.make_report`` builds and the renderers, the probe tables and the
verdict read."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdae_suite.report.runs import Run


@dataclass
class Cell:
    state: str  # 'ok', 'partial' (some runs ok) or the most telling state of the runs
    recipes: list[str] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    values: dict[str, float | None] = field(default_factory=dict)  # mean over the ok runs
    std: dict[str, float] = field(default_factory=dict)  # when several ok runs (seeds)
    n_ok: int = 0
    delta: dict[str, float] = field(default_factory=dict)
    delta_note: str | None = None
    mixed: bool = False  # the column holds several recipes (--allow-mixed-recipes): the cell names its own
    invalid: dict[str, list[Run]] = field(default_factory=dict)  # metric -> ok runs whose value is invalid (left out)


@dataclass
class Row:
    name: str
    source: str  # measured | published
    pretrained: str | None = None
    meta: dict | None = None
    cells: dict[str, Cell] = field(default_factory=dict)
    pretrain_runs: list[Run] = field(default_factory=list)
    note: str = ''
    is_baseline: bool = False
    split_from: str | None = None  # --allow-mixed-recipes: the row whose checkpoint this one repeats

    def provenance(self) -> dict[str, Any]:
        if self.source == 'published':
            return {'method': self.meta.get('method'), 'epochs': self.meta.get('epochs'), 'branch': None}
        if self.pretrained is None:
            return {'method': None, 'epochs': None, 'branch': None, 'checkpoint': None}
        m = self.meta or {}
        arch = m.get('arch') if isinstance(m.get('arch'), dict) else {}
        return {'method': m.get('method'), 'epochs': m.get('epoch'), 'branch': m.get('branch'),
                'arch': ', '.join(f'{k}={v}' for k, v in arch.items()) or None, 'config': m.get('config'),
                'git_commit': m.get('git_commit'), 'checkpoint': self.pretrained,
                'format': m.get('format') or 'no metadata (not exported by tools/export_backbone.py)'}


@dataclass
class Report:
    """Everything the renderers need, made once by :func:`make_report` (the verdict included) and then only read."""
    title: str
    generated: str  # UTC, ISO 8601
    inputs: list[dict[str, str | None]]  # [{'name': NAME or None, 'path': RUN_DIR}] as given on the command line
    rows: list[Row]  # one per checkpoint (measured) or published reference
    runs: list[Run]  # every run dir read, whatever its state
    tasks: list[str]  # the fine-tuning tasks present, in TASKS order
    recipes: dict[str, list[str]]  # task -> the recipes its runs used
    baseline: str | None  # the row the deltas are taken against
    warnings: list[str]
    pretrain_runs: list[Run]
    probe_results: list[dict[str, Any]]  # sdae_suite.contracts.ProbeResult files, as read
    visuals: list[dict[str, Any]]  # visuals.json manifests (report.visuals)
    verdict: dict[str, Any] = field(default_factory=dict)  # report.verdict.report_verdict
