#!/usr/bin/env python
"""Compare pretrained checkpoints by their COCO detection and ADE20K segmentation fine-tuning runs.

Implemented in sdae_suite/commands/benchmark_report.py; `--help` for usage."""
from sdae_suite.commands.benchmark_report import main

if __name__ == '__main__':
    raise SystemExit(main())
