"""What a data check found, and how it prints: one type for the COCO / ADE20K checks (preflight/dataset.py) and the
ImageNet-format checks (preflight/imagefolder.py), so that tools/check_dataset.py and every run start print the same
messages."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MAX_LISTED = 10  # problems of one kind printed in full; the rest are counted
FIRST_IDS = 5  # annotation ids named in a run's warning

# Per-annotation problems a run survives (mmdet drops or ignores the annotation): a run warns with the count and the
# first ids; tools/check_dataset.py reports them as problems like everything else. Every other kind stops a run.
DROPPED = {
    'boxes outside the image': 'the box does not overlap its image',
    'degenerate boxes': 'area <= 0 or a box side < 1 px',
    'unknown category ids': 'category_id is not one of the classes',
    'dangling image ids': 'image_id is not in "images"',
}
TOLERATED = {
    'boxes partly outside the image': 'mmdet keeps them unclipped',
    'bad polygons': 'mmdet ignores those masks',
    'duplicate annotation ids': 'pycocotools keeps only the last annotation of each id',
    'label maps without image': 'mmseg never reads them',
}


class DatasetError(ValueError):
    """The data a run would read has problems that stop it; the message lists them with their files."""


@dataclass
class Findings:
    problems: dict[str, list[str]] = field(default_factory=dict)
    ids: dict[str, list[Any]] = field(default_factory=dict)  # annotation ids per kind, for a run's warning
    info: list[str] = field(default_factory=list)

    def add(self, kind: str, message: str, ann_id: Any = None) -> None:
        self.problems.setdefault(kind, []).append(message)
        if ann_id is not None:
            self.ids.setdefault(kind, []).append(ann_id)

    def ok(self) -> bool:
        return not self.problems

    def errors(self) -> dict[str, list[str]]:
        return {k: v for k, v in self.problems.items() if k not in DROPPED and k not in TOLERATED}

    def render(self, kinds: Iterable[str] | None = None, info: bool = True) -> str:
        lines = [f'  {m}' for m in self.info] if info else []
        for kind in kinds if kinds is not None else self.problems:
            msgs = self.problems[kind]
            lines.append(f'PROBLEM {kind} ({len(msgs)}):')
            lines += [f'  - {m}' for m in msgs[:MAX_LISTED]]
            if len(msgs) > MAX_LISTED:
                lines.append(f'  ... and {len(msgs) - MAX_LISTED} more')
        return '\n'.join(lines)

    def warnings(self, where: str) -> list[str]:
        """One line per tolerated kind: the count, why, and the first annotation ids (or files)."""
        out = []
        for kind, msgs in self.problems.items():
            first = self.ids.get(kind) or msgs
            if kind in DROPPED:
                out.append(f'WARNING {where}: {len(msgs)} annotations with {kind} ({DROPPED[kind]}); mmdet would drop '
                           f'these without a word. First: {first[:FIRST_IDS]}')
            elif kind in TOLERATED:
                out.append(f'WARNING {where}: {len(msgs)} {kind} ({TOLERATED[kind]}). First: {first[:FIRST_IDS]}')
        return out
