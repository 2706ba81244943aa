"""The ``visuals.json`` manifest that a visualisation folder carries: which PNGs it holds, with titles and captions.
The benchmark report (``report/visuals.py``) reads it to embed the figures; a folder without one is not a visual."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from sdae_suite.engine.atomic import atomic_write_bytes, atomic_write_json

MANIFEST = 'visuals.json'
FORMAT = 'sdae-suite/visuals'


def write_manifest(out: Path, title: str, figures: list[dict[str, str]], extra: dict[str, Any] | None = None) -> Path:
    """figures: [{'file': name relative to ``out``, 'title': ..., 'caption': ...}]. Written atomically, last, so a
    killed run never leaves a manifest naming PNGs that are not there."""
    path = out / MANIFEST
    atomic_write_json({'format': FORMAT, 'version': 1, 'title': title, 'figures': figures, **(extra or {})}, path)
    return path


def save_figure(fig, path: Path, dpi: int = 90) -> None:
    """Save a matplotlib figure as PNG atomically (a rerun never leaves half a file for the report to embed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=dpi, bbox_inches='tight')
    plt.close(fig)
    atomic_write_bytes(buf.getvalue(), path)
