#!/usr/bin/env python
"""Check a COCO or ADE20K dataset root before hours of training, and say exactly what is wrong.

Implemented in sdae_suite/commands/check_dataset.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.check_dataset import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
