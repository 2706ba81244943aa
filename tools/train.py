#!/usr/bin/env python
"""Fine-tune a detector (mmdet config) or a segmentor (mmseg config); the config's default_scope says which.

Implemented in sdae_suite/commands/train.py; `--help` for usage."""
from sdae_suite.commands.train import main

if __name__ == '__main__':
    main()
