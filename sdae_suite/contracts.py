"""The formats that pass between stages, written down once: each writer and each reader imports its structure from here.

- ``<work_dir>/run_status.json`` (:class:`RunStatus`): written by ``sdae_suite.engine.run_record.RunRecorder`` for
  tools/pretrain.py and tools/train.py; read by the report (``sdae_suite.report.runs``) and tools/test.py.
- a pretraining checkpoint's ``meta['sdae']`` (:class:`PretrainMeta`): written by
  ``sdae_suite.pretrain.hooks.PretrainMetaHook``; read by tools/export_backbone.py.
- an exported backbone ``{'state_dict', 'meta'}`` (:class:`BackboneMeta`): written by tools/export_backbone.py; read by
  ``sdae_suite.backbones.pretrained`` (every ``--pretrained``), the probes and the report. The same tensors and meta
  also go to ``<stem>.safetensors`` (meta as JSON under ``sdae_suite.meta``: ``sdae_suite.engine.safetensors_io``).
- ``<work_dir>/test_results.json`` (:class:`TestResults`): written by tools/test.py; read by the report, the pictures
  and the pipeline.
- ``<probes>/<row>/<probe>_seed<N>.json`` (:class:`ProbeResult`, :func:`probe_result_path`): written by
  ``sdae_suite.probes.suite.probe_checkpoint``; read by ``sdae_suite.report.probes`` and the pipeline.
- ``<report>/results.json`` (format ``REPORT_FORMAT``): written by ``sdae_suite.report.render``; read by users and
  tests.

Every file a stage hands on is written by the one atomic writer (:mod:`sdae_suite.engine.atomic`).
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypedDict

RUN_STATUS_FILE = 'run_status.json'
LAST_CHECKPOINT_FILE = 'last_checkpoint'  # mmengine's record of a work dir's newest checkpoint (its path, as text)
TEST_RESULTS_FILE = 'test_results.json'
BACKBONE_FORMAT = 'sdae-suite/backbone'
PROBE_RESULT_FORMAT = 'sdae-suite/probe-result'
REPORT_FORMAT = 'sdae-suite/benchmark-report'
PROBES = ('knn', 'linear', 'seg')  # the frozen-feature probes, in the order they run and are shown
RANDOM_INIT = 'random init'  # the name the probe rows and the fine-tuning rows give the no-checkpoint init
# Image files of an ImageNet-style class-folder tree (pretraining data, probe data): what counts as an image.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.ppm', '.pgm')

RunKind = Literal['pretrain', 'det', 'seg', 'cls_ft', 'cls_linear']
RunState = Literal['running', 'finished', 'failed', 'preempted']
# The exit status of a run stopped by SIGTERM / SIGUSR1 after it wrote its preemption checkpoint (sysexits' EX_TEMPFAIL:
# try again later). The Slurm launchers requeue on it; the pipeline reads ``run_status.json`` (status 'preempted'),
# which also holds under torchrun (whose own exit status is 1 whenever a worker exits non-zero).
EXIT_PREEMPTED = 75


def now() -> str:
    """The timestamps of every record: UTC, ISO 8601, seconds."""
    return datetime.now(UTC).isoformat(timespec='seconds')


class PretrainMeta(TypedDict):
    """``meta['sdae']`` of every pretraining checkpoint (``sdae_suite.pretrain.hooks.PretrainMetaHook``);
    tools/export_backbone.py copies it into the exported backbone's :class:`BackboneMeta`."""
    method: str  # 'sdae' | 'mae'
    arch: dict[str, Any]
    epoch: int
    config: str
    git_commit: str


class BackboneMeta(TypedDict):
    """``meta`` of an exported backbone checkpoint (tools/export_backbone.py)."""
    format: str  # BACKBONE_FORMAT
    version: int
    method: str  # 'sdae' | 'mae'
    branch: str  # 'student' | 'teacher'
    epoch: int
    arch: dict[str, Any]  # VisionTransformer(**arch) rebuilds the encoder
    config: str
    git_commit: str


@dataclass
class RunStatus:
    """``<work_dir>/run_status.json`` of a pretraining or fine-tuning run; rank 0 rewrites it on every change."""
    kind: RunKind
    recipe: str  # the config's stem
    config: str
    pretrained: str | None = None  # the backbone checkpoint a fine-tuning run starts from (None: random init)
    pretrained_meta: BackboneMeta | None = None
    status: RunState = 'running'
    started: str = field(default_factory=now)
    ended: str | None = None
    error: str | None = None  # 'Type: message' (or the explained cause) when status is 'failed' or 'preempted'
    checkpoint: str | None = None  # status 'preempted': the checkpoint written on the signal, which --resume reads
    iteration: int | None = None  # status 'preempted': the iterations done when it stopped

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class TestResults(TypedDict):
    """``<work_dir>/test_results.json`` (tools/test.py)."""
    task: str  # 'det' | 'seg' | 'cls_ft' | 'cls_linear' (ImageNet-style fine-tuning / linear probing)
    recipe: str
    config: str
    checkpoint: str
    pretrained: str | None
    pretrained_meta: BackboneMeta | None
    metrics: dict[str, Any]  # runner.test()'s dict, numbers as floats
    time: str
    status: str  # 'ok'


class ProbeResult(TypedDict):
    """One probe of one checkpoint at one seed (``sdae_suite.probes.suite.probe_checkpoint``)."""
    format: str  # PROBE_RESULT_FORMAT
    probe: str  # one of PROBES
    name: str
    checkpoint: str | None  # None: random init
    checkpoint_meta: BackboneMeta | None
    branch: str | None
    arch: dict[str, Any]
    seed: int
    metrics: dict[str, float]
    settings: dict[str, Any]
    data: dict[str, Any]
    time_s: dict[str, Any]


PROBE_RESULT_FILE = re.compile(rf'^({"|".join(PROBES)})_seed(-?\d+)\.json$')


def probe_dir_name(name: str) -> str:
    """The folder of a row's probe results: its name with anything but ``A-Za-z0-9._-`` replaced."""
    return re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('_') or 'checkpoint'


def probe_result_path(out: str | os.PathLike, name: str, probe: str, seed: int | str) -> Path:
    """``<out>/<row folder>/<probe>_seed<seed>.json``: where a probe result is written and looked for."""
    return Path(out) / probe_dir_name(name) / f'{probe}_seed{seed}.json'
