"""The report's structure: rows (one per pretrained checkpoint or published reference), cells (one per task), the
published references, the verdict table and the :class:`Report` that ``sdae_suite.report.compare.make_report`` builds
and the renderers, the probe tables and the verdict read."""
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
    # metric -> ok runs with a value: a metric some runs lack (top-1 max of a run that never validated) is a mean of
    # fewer seeds than n_ok, and the notes say so
    n: dict[str, int] = field(default_factory=dict)
    delta: dict[str, float] = field(default_factory=dict)
    delta_note: str | None = None
    mixed: bool = False  # the column holds several recipes (--allow-mixed-recipes): the cell names its own
    invalid: dict[str, list[Run]] = field(default_factory=dict)  # metric -> ok runs whose value is invalid (left out)


@dataclass(frozen=True)
class Reference:
    """A published result (``--published``): quoted, never measured here, so every row carries where its numbers come
    from, shown beside them in report.md / report.html and kept in results.json."""
    name: str
    method: str
    epochs: int  # pretraining epochs
    values: dict[str, float]  # Metric.name -> percent, only numbers obtained with the protocol a column stands for
    source: str  # the publication (and table / file) the values are quoted from
    note: str = ''  # protocol remarks, numbers left out of the columns and why


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
    reference: Reference | None = None  # published rows: the quoted result and its source

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


WIN, TIE, LOSS, ONE_SEED = 'win', 'tie', 'loss', 'one seed'  # an init against the baseline (report.verdict's rule)


@dataclass(frozen=True)
class VerdictCell:
    """One init against the baseline on one metric: the call the seed spread allows and its size, so the verdict
    reads as a table instead of a paragraph."""
    outcome: str  # WIN | TIE | LOSS | ONE_SEED (a side has one seed: spread unknown, no call)
    margin: float  # the init's mean minus the baseline's, in points
    n: int  # the init's seeds
    n_baseline: int

    @property
    def text(self) -> str:
        """'win +4.30', 'tie -0.20', 'loss -3.10' or '1 seed +0.70'."""
        return f'{"1 seed" if self.outcome == ONE_SEED else self.outcome} {self.margin:+.2f}'

    def to_json(self) -> dict[str, Any]:
        return {'outcome': self.outcome, 'margin': self.margin, 'text': self.text, 'n': self.n,
                'n_baseline': self.n_baseline}


@dataclass
class VerdictTable:
    """Rows = inits other than the baseline (in the report's order), columns = the ranked metrics the baseline has a
    value on; a missing cell is a metric one side has no value for."""
    baseline: str
    metrics: list[str]
    inits: list[str]
    cells: dict[str, dict[str, VerdictCell]]  # init -> metric -> cell

    def counts(self, init: str) -> dict[str, int]:
        """{outcome: how many metrics} of one init, every outcome present (0 when none)."""
        out = dict.fromkeys((WIN, TIE, LOSS, ONE_SEED), 0)
        for c in self.cells.get(init, {}).values():
            out[c.outcome] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {'baseline': self.baseline, 'metrics': self.metrics,
                'rows': [{'init': i, 'cells': {m: c.to_json() for m, c in self.cells.get(i, {}).items()},
                          'counts': self.counts(i)} for i in self.inits]}


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
