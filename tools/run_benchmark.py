#!/usr/bin/env python
"""The whole benchmark as one resumable pipeline: data -> pretrain SdAE & MAE -> export -> frozen-feature probes (k-NN,
linear, linear-seg) of each init -> fine-tune det & seg from each init (SdAE, MAE, random) -> test -> report.

Implemented in sdae_suite/commands/run_benchmark.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.run_benchmark import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
