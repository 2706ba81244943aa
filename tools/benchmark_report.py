#!/usr/bin/env python
"""Compare pretrained checkpoints by their COCO detection and ADE20K segmentation fine-tuning runs.

Implemented in sdae_suite/commands/benchmark_report.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.benchmark_report import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
