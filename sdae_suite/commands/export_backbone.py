#!/usr/bin/env python
"""Export the student (default) or EMA-teacher encoder of a pretraining checkpoint as a backbone checkpoint.

    python tools/export_backbone.py CKPT OUT [--branch student|teacher]

OUT = {'state_dict': timm-style VisionTransformer keys (no prefix), 'meta': {'format': 'sdae-suite/backbone',
'version': 1, 'method', 'branch', 'epoch', 'arch', 'config', 'git_commit'}}, written atomically. The transfer
backbone (and ``sdae_suite.backbones.vit.VisionTransformer(**meta['arch'])``) loads it without conversion.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdae_suite.backbones.vit import VisionTransformer
from sdae_suite.contracts import BACKBONE_FORMAT, BackboneMeta
from sdae_suite.engine.atomic import atomic_torch_save
from sdae_suite.engine.checkpoint_io import safe_torch_load

PREFIX = {'student': 'encoder.', 'teacher': 'teacher.'}


class ExportError(ValueError):
    """The checkpoint cannot be exported as a backbone (the message says why and what to do)."""


def export_backbone(ckpt: str | Path, out: str | Path, branch: str = 'student') -> BackboneMeta:
    """Returns the exported meta. Refuses anything that is not one of our pretraining checkpoints."""
    ckpt = Path(ckpt)
    try:
        obj = safe_torch_load(ckpt)
    except (OSError, RuntimeError, ValueError) as e:  # missing, refused, truncated: the message names file and fix
        raise ExportError(str(e)) from None
    sdae = obj.get('meta', {}).get('sdae') if isinstance(obj, dict) else None
    if not isinstance(obj, dict) or 'state_dict' not in obj or sdae is None:
        raise ExportError(f"{ckpt}: not a pretraining checkpoint of this suite (expected a Runner checkpoint with "
                          f"'state_dict' and meta['sdae'], written by tools/pretrain.sh)")
    if branch not in PREFIX:
        raise ExportError(f"--branch must be 'student' or 'teacher', got {branch!r}")
    prefix = PREFIX[branch]
    state = {k[len(prefix):]: v for k, v in obj['state_dict'].items() if k.startswith(prefix)}
    if not state:
        hint = ' (MAE has no teacher: use --branch student)' if sdae['method'] == 'mae' else ''
        raise ExportError(f"{ckpt}: no '{prefix}*' weights in this {sdae['method']} checkpoint{hint}")
    # Prove the export loads before writing it: every key of the backbone present, nothing left over.
    arch = dict(sdae['arch'])
    try:
        missing, unexpected = VisionTransformer(**arch).load_state_dict(state, strict=False)
    except (RuntimeError, TypeError) as e:  # tensors of the wrong shape; an arch the ViT does not take
        raise ExportError(f'{ckpt}: the {branch} weights do not fit VisionTransformer({arch}): {e}') from None
    if missing or unexpected:
        raise ExportError(f'{ckpt}: the {branch} weights do not match VisionTransformer({arch}): missing {missing}, '
                          f'unexpected {unexpected}')
    meta = BackboneMeta(format=BACKBONE_FORMAT, version=1, method=sdae['method'], branch=branch,
                        epoch=int(sdae['epoch']), arch=arch, config=str(sdae.get('config', '')),
                        git_commit=str(sdae.get('git_commit', 'unknown')))
    atomic_torch_save(dict(state_dict=state, meta=meta), out)
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('ckpt')
    p.add_argument('out')
    p.add_argument('--branch', choices=sorted(PREFIX), default='student')
    args = p.parse_args(argv)
    try:
        meta = export_backbone(args.ckpt, args.out, args.branch)
    except ExportError as e:
        print(f'export error: {e}', file=sys.stderr)
        return 2
    print(f"[export] {args.out}: {meta['method']} {meta['branch']}, epoch {meta['epoch']}, arch {meta['arch']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
