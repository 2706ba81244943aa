"""What a detection / segmentation run leaves next to its checkpoints for tools and reports (team contract 5):
``<work_dir>/run_status.json`` (rewritten atomically on every change) and ``<work_dir>/test_results.json``."""
from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .checkpoint_io import atomic_write_bytes


def now() -> str:
    return datetime.now(UTC).isoformat(timespec='seconds')


def task_of(cfg: Any) -> str:
    """'det' or 'seg', from the config's default_scope (the toolbox it is written for)."""
    scope = cfg.get('default_scope')
    kinds = {'mmdet': 'det', 'mmseg': 'seg'}
    if scope not in kinds:
        raise ValueError(f"{cfg.filename}: default_scope is {scope!r}; transfer configs must inherit an mmdet or mmseg "
                         f"base config (default_scope 'mmdet' or 'mmseg') so the launcher knows the task")
    return kinds[scope]


def write_json(path: str | os.PathLike, obj: dict) -> None:
    atomic_write_bytes((json.dumps(obj, indent=2, default=str) + '\n').encode(), path)


def pretrained_of(cfg: Any) -> tuple[str | None, dict | None]:
    """(checkpoint path, exported-backbone meta or None) the config's backbone is initialised from."""
    from .pretrained import read_meta

    init = (cfg.model.get('backbone') or {}).get('init_cfg') or {}
    ckpt = init.get('checkpoint') if isinstance(init, dict) else None
    meta = read_meta(ckpt) if ckpt and Path(ckpt).is_file() else None
    return ckpt, meta


class RunStatus:
    """run_status.json of one training run (contract 5); only the rank-0 process writes."""

    def __init__(self, work_dir: str | os.PathLike, kind: str, config: str, pretrained: str | None,
                 pretrained_meta: dict | None, rank: int = 0):
        self.path = Path(work_dir) / 'run_status.json'
        self.rank = rank
        self.data = dict(status='running', kind=kind, recipe=Path(config).stem, config=str(config),
                         pretrained=pretrained, pretrained_meta=pretrained_meta, started=now(), ended=None, error=None)
        self._write()

    def _write(self) -> None:
        if self.rank == 0:
            write_json(self.path, self.data)

    def finish(self, error: BaseException | None = None) -> None:
        self.data.update(status='failed' if error else 'finished', ended=now(),
                         error=f'{type(error).__name__}: {error}' if error else None)
        self._write()
