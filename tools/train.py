#!/usr/bin/env python
"""Fine-tune a detector (mmdet config) or a segmentor (mmseg config); the config's default_scope says which.

Implemented in sdae_suite/commands/train.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.train import main  # noqa: E402

if __name__ == '__main__':
    main()
