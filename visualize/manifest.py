"""The ``visuals.json`` manifest that a visualisation folder carries: which PNGs it holds, with titles and captions.
The benchmark report (``report/visuals.py``) reads it to embed the figures; a folder without one is not a visual."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MANIFEST = 'visuals.json'
FORMAT = 'sdae-suite/visuals'


def write_manifest(out: Path, title: str, figures: list[dict[str, str]], extra: dict[str, Any] | None = None) -> Path:
    """figures: [{'file': name relative to ``out``, 'title': ..., 'caption': ...}]. Written atomically, last, so a
    killed run never leaves a manifest naming PNGs that are not there."""
    path = out / MANIFEST
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(json.dumps({'format': FORMAT, 'version': 1, 'title': title, 'figures': figures, **(extra or {})},
                              indent=1) + '\n')
    os.replace(tmp, path)
    return path


def save_figure(fig, path: Path, dpi: int = 90) -> None:
    """Save a matplotlib figure as PNG atomically (a rerun never leaves half a file for the report to embed)."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f'.{path.name}.tmp')
    fig.savefig(tmp, format='png', dpi=dpi, bbox_inches='tight')
    plt.close(fig)
    os.replace(tmp, path)
