#!/usr/bin/env python
"""Write the embedded demo data set: no download needed to run the whole suite.

Implemented in sdae_suite/commands/make_demo_data.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.make_demo_data import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
