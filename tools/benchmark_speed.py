#!/usr/bin/env python
"""Pretraining step cost of SdAE, MAE and SdAE with a full-image teacher, measured in ONE run, interleaved
(sdae_suite/benchmarks/speed.py says what a step is and how each column is measured).

Implemented in sdae_suite/commands/benchmark_speed.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.benchmark_speed import main  # noqa: E402

if __name__ == '__main__':
    main()
