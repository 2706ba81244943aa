"""Frozen-feature probes of checkpoints: k-NN and linear classification, linear semantic segmentation.

  python tools/probe.py work_dirs/sdae.pth work_dirs/mae.pth --random --data data/demo --seeds 0 1 2 \\
      --out work_dirs/demo/probes
  python tools/probe.py vitb.pth --cls-data /data/imagenet/train --cls-val /data/imagenet/val \\
      --seg-data /data/ade/ADEChallengeData2016 --seg-classes 150 \\
      --arch img_size=224,patch_size=16,embed_dim=768,depth=12,num_heads=12   # (only for files without meta arch)

Writes OUT/<checkpoint name>/<probe>_seed<seed>.json (read by tools/benchmark_report.py); features are cached in
--cache (default OUT/.feature_cache), keyed by the checkpoint's content, the data files and the settings.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sdae_suite.engine.atomic import write_failure_exits
from sdae_suite.probes.data import ProbeDataError
from sdae_suite.probes.features import ProbeCheckpointError
from sdae_suite.probes.suite import PROBES, ProbeData, ProbeSettings, probe_checkpoint


def parse_arch(text: str | None) -> dict | None:
    """'img_size=64,patch_size=8,...' -> dict of numbers."""
    if not text:
        return None
    out = {}
    for item in text.split(','):
        k, sep, v = item.partition('=')
        if not sep:
            raise argparse.ArgumentTypeError(f'--arch {text!r}: expected key=value,key=value')
        out[k.strip()] = float(v) if '.' in v else int(v)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='tools/probe.py', description='Frozen-feature probes of ViT checkpoints.')
    p.add_argument('checkpoints', nargs='*', metavar='CKPT', help='any layout backbones/pretrained.py accepts')
    p.add_argument('--name', action='append', default=[], metavar='NAME=CKPT', help='a checkpoint with a row name')
    p.add_argument('--random', action='store_true', help='also probe a random init (one draw per seed)')
    p.add_argument('--data', metavar='DIR', help='demo-layout root: DIR/pretrain/train (classes) and DIR/ade')
    p.add_argument('--cls-data', metavar='DIR', help='class folders (split into train / held-out unless --cls-val)')
    p.add_argument('--cls-val', metavar='DIR', help='held-out class folders (same class names)')
    p.add_argument('--seg-data', metavar='DIR', help='ADE20K-format folder')
    p.add_argument('--seg-classes', type=int, help='number of segmentation classes (default: from the labels)')
    p.add_argument('--probes', nargs='+', default=list(PROBES), choices=PROBES)
    p.add_argument('--seeds', nargs='+', type=int, default=[0])
    p.add_argument('--branch', default='student', choices=('student', 'teacher'))
    p.add_argument('--arch', type=parse_arch, help='for checkpoints without meta arch (and --random without any '
                   'checkpoint): img_size=..,patch_size=..,embed_dim=..,depth=..,num_heads=..')
    p.add_argument('--img-size', type=int, help='classification input size (default: the pretraining size)')
    p.add_argument('--seg-size', type=int, help='segmentation input size (default: twice the pretraining size)')
    p.add_argument('--max-train-per-class', type=int, default=150,
                   help='first N images of each class in the k-NN bank / linear training set (0: all; default 150)')
    p.add_argument('--max-test-per-class', type=int, default=50,
                   help='first N held-out images of each class (0: all; default 50)')
    p.add_argument('--max-seg-train', type=int, default=0,
                   help='first N segmentation training images (0: all, the default)')
    p.add_argument('--max-seg-val', type=int, default=0,
                   help='first N segmentation validation images (0: all, the default)')
    p.add_argument('--out', required=True, metavar='DIR')
    p.add_argument('--cache', metavar='DIR', help='feature cache (default OUT/.feature_cache)')
    return p.parse_args(argv)


@write_failure_exits('probe: error:')  # disk full: one line and exit status 1, the earlier results intact
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ckpts: list[tuple[str | None, str | None]] = [(None, c) for c in args.checkpoints]
    for item in args.name:
        name, sep, path = item.partition('=')
        if not sep:
            print(f'probe: error: --name {item!r}: expected NAME=CKPT', file=sys.stderr)
            return 2
        ckpts.append((name, path))
    if args.random:
        ckpts.append((None, None))
    if not ckpts:
        print('probe: error: no checkpoint given (CKPT, --name NAME=CKPT or --random)', file=sys.stderr)
        return 2
    cls_root, seg_root = args.cls_data, args.seg_data
    if args.data:
        cls_root = cls_root or str(Path(args.data) / 'pretrain' / 'train')
        seg_root = seg_root or str(Path(args.data) / 'ade')
    need_cls = any(p in args.probes for p in ('knn', 'linear'))
    if (need_cls and not cls_root) or ('seg' in args.probes and not seg_root):
        print('probe: error: no data: pass --data DIR (demo layout) or --cls-data / --seg-data', file=sys.stderr)
        return 2
    arch = args.arch
    if arch is None and args.random and not args.checkpoints and not args.name:
        print('probe: error: --random alone needs --arch', file=sys.stderr)
        return 2
    settings = ProbeSettings(img_size=args.img_size, seg_size=args.seg_size, seg_num_classes=args.seg_classes,
                             max_train_per_class=args.max_train_per_class or None,
                             max_test_per_class=args.max_test_per_class or None,
                             seg_max_train=args.max_seg_train or None, seg_max_val=args.max_seg_val or None)
    data = ProbeData(cls_root, args.cls_val, seg_root, settings)
    cache = args.cache or str(Path(args.out) / '.feature_cache')
    t0 = time.perf_counter()
    try:
        for name, ckpt in ckpts:
            # A random init takes the architecture of the first checkpoint unless --arch says otherwise.
            a = arch
            if ckpt is None and a is None:
                from sdae_suite.probes.features import checkpoint_arch
                first = next(c for _, c in ckpts if c is not None)
                a = checkpoint_arch(first) or None
                if a is None:
                    print(f'probe: error: {first} does not record its architecture; pass --arch for --random',
                          file=sys.stderr)
                    return 2
            probe_checkpoint(ckpt, data, args.out, tuple(args.probes), tuple(args.seeds), name=name,
                             branch=args.branch, arch=a, cache_dir=cache)
    except (ProbeDataError, ProbeCheckpointError, FileNotFoundError) as e:
        print(f'probe: error: {e}', file=sys.stderr)
        return 2
    print(f'done in {time.perf_counter() - t0:.1f} s; results in {args.out}')
    return 0
