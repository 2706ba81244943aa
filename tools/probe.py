#!/usr/bin/env python
"""Frozen-feature probes of checkpoints: k-NN and linear classification, linear semantic segmentation.

Implemented in sdae_suite/commands/probe.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.probe import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
