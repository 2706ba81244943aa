"""Pictures in the report: the figures of ``visualize/`` (attention / PCA maps, predictions side by side), found by
their ``visuals.json`` manifests under the ``--visuals`` folders, copied into ``<out>/visuals/`` (report.md links
them there) and embedded as data: URIs in report.html (which stays one self-contained file)."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from sdae_suite.engine.atomic import atomic_write_bytes
from sdae_suite.visualize.manifest import FORMAT, MANIFEST

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def find_visuals(dirs: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Sections [{'title', 'figures': [{'title', 'caption', 'path'}]}] of every manifest under ``dirs``, and
    warnings for what could not be used (a missing folder is a warning, not an error: pictures are optional)."""
    sections, warnings = [], []
    for d in map(Path, dirs):
        if not d.is_dir():
            warnings.append(f'--visuals {d}: does not exist; the report has no pictures from it (run '
                            f'tools/visualize_features.py / tools/visualize_predictions.py --out {d}/...)')
            continue
        manifests = sorted(d.rglob(MANIFEST))
        if not manifests:
            warnings.append(f'--visuals {d}: no {MANIFEST} in it; no pictures from it')
        for m in manifests:
            try:
                data = json.loads(m.read_text())
            except (OSError, ValueError) as e:
                warnings.append(f'{m}: unreadable ({e}); its pictures are left out (rerun the tool that wrote it)')
                continue
            if not isinstance(data, dict) or data.get('format') != FORMAT or not isinstance(data.get('figures'), list):
                warnings.append(f'{m}: not a {FORMAT} manifest; left out')
                continue
            figures = []
            for f in data['figures']:
                path = m.parent / str(f.get('file', ''))
                try:
                    ok = path.is_file() and path.read_bytes()[:8] == PNG_MAGIC
                except OSError:
                    ok = False
                if not ok:
                    warnings.append(f'{m}: {path} is missing or not a PNG; that picture is left out (rerun the tool '
                                    f'that wrote {m.name})')
                    continue
                figures.append({'title': str(f.get('title') or path.stem), 'caption': str(f.get('caption') or ''),
                                'path': path})
            if figures:
                sections.append({'title': str(data.get('title') or m.parent.name), 'figures': figures})
    return sections, warnings


def copy_visuals(sections: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """Copy the PNGs into ``<out>/visuals/`` (a report folder that is moved keeps its pictures); adds 'file' (relative
    to ``out``) to every figure. Each copy goes through the atomic writer, and old copies are removed only after all
    new ones are written: a full disk leaves the previous report's pictures in place."""
    dest = out / 'visuals'
    written = set()
    for i, sec in enumerate(sections):
        for f in sec['figures']:
            target = dest / f'{i}_{f["path"].parent.name}' / f['path'].name
            atomic_write_bytes(f['path'].read_bytes(), target)
            written.add(target)
            f['file'] = target.relative_to(out).as_posix()
    if dest.exists():  # stale pictures of an earlier report
        for old in sorted(dest.rglob('*'), reverse=True):
            if old.is_file() and old not in written:
                old.unlink()
            elif old.is_dir() and not any(old.iterdir()):
                old.rmdir()
    return sections


def visuals_markdown(sections: list[dict[str, Any]]) -> list[str]:
    lines = []
    for sec in sections:
        lines += [f'## {sec["title"]}', '']
        for f in sec['figures']:
            lines += [f'![{f["title"]}]({f["file"]})', '', f['caption'].replace('\n', ' '), '']
    return lines


def visuals_html(sections: list[dict[str, Any]], out: Path) -> list[str]:
    e = html.escape
    parts = []
    for sec in sections:
        parts.append(f'<h2>{e(sec["title"])}</h2>')
        for f in sec['figures']:
            data = base64.b64encode((out / f['file']).read_bytes()).decode('ascii')
            parts.append(f'<figure class="visual"><img alt="{e(f["title"])}" src="data:image/png;base64,{data}">'
                         f'<figcaption><b>{e(f["title"])}.</b> {e(f["caption"])}</figcaption></figure>')
    return parts
