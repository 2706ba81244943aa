#!/usr/bin/env python
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

import sys
from pathlib import Path

if __package__ in (None, ''):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probes.cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
