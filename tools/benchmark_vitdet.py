#!/usr/bin/env python
"""ViTDet-config backbone vs timm's samvit_base_patch16 (the same architecture), forward + backward, side by side.

Implemented in sdae_suite/commands/benchmark_vitdet.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.benchmark_vitdet import main  # noqa: E402

if __name__ == '__main__':
    main()
