#!/usr/bin/env python
"""Check a COCO or ADE20K dataset root before hours of training, and say exactly what is wrong.

Implemented in sdae_suite/commands/check_dataset.py; `--help` for usage."""
from sdae_suite.commands.check_dataset import main

if __name__ == '__main__':
    raise SystemExit(main())
