#!/usr/bin/env python
"""GPU readiness in one command (`make gpu-check`): every CUDA path of the suite exercised once, with figures.

Implemented in sdae_suite/commands/gpu_check.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.gpu_check import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
