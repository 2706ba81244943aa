#!/usr/bin/env python
"""Write the embedded demo data set: no download needed to run the whole suite.

Implemented in sdae_suite/commands/make_demo_data.py; `--help` for usage."""
from sdae_suite.commands.make_demo_data import main

if __name__ == '__main__':
    raise SystemExit(main())
