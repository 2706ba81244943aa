#!/usr/bin/env python
"""Fine-tuned detectors' and segmentors' predictions on the same validation images, ground truth first, one column per
init (side by side), one PNG per task.

Implemented in sdae_suite/commands/visualize_predictions.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.visualize_predictions import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
