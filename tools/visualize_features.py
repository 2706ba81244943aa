#!/usr/bin/env python
"""Attention and patch-feature maps of ViT checkpoints on a fixed set of images: one row per checkpoint.

Implemented in sdae_suite/commands/visualize_features.py; `--help` for usage."""
from sdae_suite.commands.visualize_features import main

if __name__ == '__main__':
    raise SystemExit(main())
