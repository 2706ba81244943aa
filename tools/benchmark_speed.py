#!/usr/bin/env python
"""Pretraining step cost of SdAE, MAE and SdAE with a full-image teacher, measured in ONE run, interleaved
(sdae_suite/benchmarks/speed.py says what a step is and how each column is measured).

Implemented in sdae_suite/commands/benchmark_speed.py; `--help` for usage."""
from sdae_suite.commands.benchmark_speed import main

if __name__ == '__main__':
    main()
