#!/usr/bin/env python
"""Fine-tuned detectors' and segmentors' predictions on the same validation images, ground truth first, one column per
init (side by side), one PNG per task.

  python tools/visualize_predictions.py work_dirs/demo/finetune --out work_dirs/demo/visuals/predictions

RUN_DIR: tested fine-tuning work dirs (tools/test.py wrote test_results.json there) or folders holding them; per task
and init the lowest seed is shown. Writes predictions_det.png, predictions_seg.png and visuals.json (read by
tools/benchmark_report.py --visuals). Library code: sdae_suite/visualize/predictions.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdae_suite.visualize.predictions import visualize


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('run_dirs', nargs='+', type=Path, metavar='RUN_DIR')
    p.add_argument('--out', type=Path, required=True, help='output folder')
    p.add_argument('--num-images', type=int, default=3, help='validation images shown (the first N of the set)')
    p.add_argument('--score-thr', type=float, default=0.3, help='detections drawn from this score up')
    p.add_argument('--min-shown', type=int, default=0, metavar='K',
                   help="also draw each image's K best detections below --score-thr (a short run's best guesses)")
    p.add_argument('--device', help='default: cuda when available, else cpu')
    args = p.parse_args(argv)
    if args.num_images < 1:
        p.error('--num-images must be >= 1')
    manifest = visualize(args.run_dirs, args.out, args.num_images, args.score_thr, args.min_shown,
                         args.device)
    print(f'[visualize_predictions] wrote {manifest} and the PNGs it lists')
    return 0


if __name__ == '__main__':
    sys.exit(main())
