#!/usr/bin/env python
"""Export the student (default) or EMA-teacher encoder of a pretraining checkpoint as a backbone checkpoint.

Implemented in sdae_suite/commands/export_backbone.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.export_backbone import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
