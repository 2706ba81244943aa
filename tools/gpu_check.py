#!/usr/bin/env python
"""GPU readiness in one command (`make gpu-check`): every CUDA path of the suite exercised once, with figures.

Implemented in sdae_suite/commands/gpu_check.py; `--help` for usage."""
from sdae_suite.commands.gpu_check import main

if __name__ == '__main__':
    raise SystemExit(main())
