#!/usr/bin/env python
"""What share of the pretraining targets a no-learning baseline explains, against the student's loss.

Implemented in sdae_suite/commands/diagnose_targets.py; `--help` for usage."""
from sdae_suite.commands.diagnose_targets import main

if __name__ == '__main__':
    raise SystemExit(main())
