#!/usr/bin/env python
"""What a user runs when something is off (`make doctor`): versions, compiled ops, devices, the fix for each failure.

Implemented in sdae_suite/commands/env_check.py; `--help` for usage."""
from sdae_suite.commands.env_check import main

if __name__ == '__main__':
    raise SystemExit(main())
