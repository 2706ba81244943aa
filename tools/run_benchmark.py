#!/usr/bin/env python
"""The whole benchmark as one resumable pipeline: data -> pretrain SdAE & MAE -> export -> frozen-feature probes (k-NN,
linear, linear-seg) of each init -> fine-tune det & seg from each init (SdAE, MAE, random) -> test -> report.

Implemented in sdae_suite/commands/run_benchmark.py; `--help` for usage."""
from sdae_suite.commands.run_benchmark import main

if __name__ == '__main__':
    raise SystemExit(main())
