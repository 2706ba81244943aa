#!/usr/bin/env python
"""Attention and patch-feature maps of ViT checkpoints on a fixed set of images: one row per checkpoint.

Implemented in sdae_suite/commands/visualize_features.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.visualize_features import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
