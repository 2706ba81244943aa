#!/usr/bin/env python
"""What a user runs when something is off (`make doctor`): versions, compiled ops, devices, the fix for each failure.

Implemented in sdae_suite/commands/env_check.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.env_check import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
