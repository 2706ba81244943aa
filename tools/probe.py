#!/usr/bin/env python
"""Frozen-feature probes of checkpoints: k-NN and linear classification, linear semantic segmentation.

Implemented in sdae_suite/commands/probe.py; `--help` for usage."""
from sdae_suite.commands.probe import main

if __name__ == '__main__':
    raise SystemExit(main())
