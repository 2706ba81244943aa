#!/usr/bin/env python
"""ViTDet-config backbone vs timm's samvit_base_patch16 (the same architecture), forward + backward, side by side.

Implemented in sdae_suite/commands/benchmark_vitdet.py; `--help` for usage."""
from sdae_suite.commands.benchmark_vitdet import main

if __name__ == '__main__':
    main()
