#!/usr/bin/env python
"""Compare pretrained checkpoints by their COCO detection, ADE20K segmentation and ImageNet-style classification
(end-to-end fine-tuning and linear probing) runs, and by their frozen-feature probes.

  python tools/benchmark_report.py work_dirs/demo --baseline random --out work_dirs/demo/report
  python tools/benchmark_report.py --name SdAE=work_dirs/sdae --name MAE=work_dirs/mae --published --out report/

RUN_DIR arguments are run dirs or folders holding run dirs (searched recursively). One row per pretrained checkpoint
(random init = no checkpoint, from run_status.json's `pretrained` / `pretrained_meta`), one column group per task
(run_status.json's `kind`: det, seg, cls_ft, cls_linear); each run of a task and checkpoint is one seed. The report
opens with a one-line verdict and a table of each init against the --baseline (win / tie / loss beyond the seed spread).
Writes report.md, report.html (self-contained), results.json, results.csv and plots/*.png into --out.
Unreadable, failed, running or untested runs are shown as such and do not stop the report (exit 0 with warnings);
exit 1 when no run could be read at all, exit 2 on bad arguments or recipes mixed without --allow-mixed-recipes.
"""
from __future__ import annotations

import argparse
import sys

from sdae_suite.contracts import RANDOM_INIT
from sdae_suite.engine.atomic import write_failure_exits
from sdae_suite.report.compare import generate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('run_dirs', nargs='*', metavar='RUN_DIR', help='run dirs, or folders searched for run dirs')
    p.add_argument('--name', action='append', default=[], metavar='NAME=RUN_DIR',
                   help='name the checkpoint row of the runs under RUN_DIR (also adds RUN_DIR)')
    p.add_argument('--baseline', metavar='NAME', help=f'row the deltas are taken against: its name, the first word(s) '
                   f'of it, or "random" (default: {RANDOM_INIT!r} when present)')
    p.add_argument('--published', action='store_true',
                   help='add published ViT-B/16 reference rows (COCO, ADE20K, ImageNet-1K top-1), each with its source')
    p.add_argument('--allow-mixed-recipes', action='store_true',
                   help='put runs of different recipes in one column (each cell names its recipe)')
    p.add_argument('--stale-after-min', type=float, default=120.0,
                   help='a "running" run with no file written for this long is shown as stalled (default 120)')
    p.add_argument('--visuals', action='append', default=[], metavar='DIR',
                   help='folder with pictures to embed (visuals.json of tools/visualize_features.py / '
                        'tools/visualize_predictions.py, searched recursively)')
    p.add_argument('--title', default='Transfer benchmark report')
    p.add_argument('--out', required=True, metavar='DIR', help='output folder')
    return p.parse_args(argv)


@write_failure_exits('benchmark_report: error:')  # disk full: one line and exit status 1, the old report intact
def main(argv: list[str] | None = None) -> int:
    return generate(parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
