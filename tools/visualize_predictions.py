#!/usr/bin/env python
"""Fine-tuned detectors' and segmentors' predictions on the same validation images, ground truth first, one column per
init (side by side), one PNG per task.

Implemented in sdae_suite/commands/visualize_predictions.py; `--help` for usage."""
from sdae_suite.commands.visualize_predictions import main

if __name__ == '__main__':
    raise SystemExit(main())
