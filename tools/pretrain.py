#!/usr/bin/env python
"""SdAE / MAE pretraining, one process (tools/pretrain.sh starts one per GPU through torchrun).

Implemented in sdae_suite/commands/pretrain.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.pretrain import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
