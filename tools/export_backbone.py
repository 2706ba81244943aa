#!/usr/bin/env python
"""Export the student (default) or EMA-teacher encoder of a pretraining checkpoint as a backbone checkpoint.

Implemented in sdae_suite/commands/export_backbone.py; `--help` for usage."""
from sdae_suite.commands.export_backbone import main

if __name__ == '__main__':
    raise SystemExit(main())
