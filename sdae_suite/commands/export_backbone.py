#!/usr/bin/env python
"""Export the student (default) or EMA-teacher encoder of a pretraining checkpoint as a backbone checkpoint.

    python tools/export_backbone.py CKPT OUT [--branch student|teacher]

OUT = {'state_dict': timm-style VisionTransformer keys (no prefix), 'meta': {'format': 'sdae-suite/backbone',
'version': 1, 'method', 'branch', 'epoch', 'arch', 'config', 'git_commit'}}, written atomically. The transfer
backbone (and ``sdae_suite.backbones.vit.VisionTransformer(**meta['arch'])``) loads it without conversion.
Next to it, OUT with the suffix .safetensors holds the same tensors and the same meta (as JSON in the header, key
'sdae_suite.meta'): weights to share that load without unpickling, here (every --pretrained) and in timm / Hugging Face.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sdae_suite.backbones.vit import VisionTransformer
from sdae_suite.contracts import BACKBONE_FORMAT, BackboneMeta
from sdae_suite.engine.atomic import atomic_torch_save, atomic_write_bytes, write_failure_exits
from sdae_suite.engine.checkpoint_io import safe_torch_load
from sdae_suite.engine.safetensors_io import SUFFIX, backbone_bytes, is_safetensors

PREFIX = {'student': 'encoder.', 'teacher': 'teacher.'}


class ExportError(ValueError):
    """The checkpoint cannot be exported as a backbone (the message says why and what to do)."""


def safetensors_path(out: str | Path) -> Path:
    """Where the ``.safetensors`` twin of the exported ``out`` goes: same folder, same stem."""
    return Path(out).with_suffix(SUFFIX)


def export_backbone(ckpt: str | Path, out: str | Path, branch: str = 'student') -> BackboneMeta:
    """Returns the exported meta. Refuses anything that is not one of our pretraining checkpoints."""
    ckpt = Path(ckpt)
    if is_safetensors(out):
        raise ExportError(f'OUT {out} names the .safetensors file; pass the .pth path (e.g. '
                          f'{Path(out).with_suffix(".pth")}): the .safetensors is written next to it, same stem')
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
    # Both files carry the meta in its JSON form (a tuple img_size becomes a list), so the two metas are equal.
    meta = json.loads(json.dumps(meta))
    # The .safetensors first: the .pth is what the pipeline records as the export's output, so a kill between the
    # two writes leaves no .pth and the export runs again.
    atomic_write_bytes(backbone_bytes(state, meta), safetensors_path(out))
    atomic_torch_save(dict(state_dict=state, meta=meta), out)
    return meta


@write_failure_exits('export error:')  # disk full: one line and exit status 1, the earlier files intact
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
    print(f'[export] {safetensors_path(args.out)}: the same weights and meta as .safetensors (loads without pickle)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
