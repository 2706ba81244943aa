#!/usr/bin/env python
"""What share of the pretraining targets a no-learning baseline explains, against the student's loss.

Implemented in sdae_suite/commands/diagnose_targets.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.diagnose_targets import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
