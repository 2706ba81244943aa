#!/usr/bin/env python
"""SdAE / MAE pretraining, one process (tools/pretrain.sh starts one per GPU through torchrun).

Implemented in sdae_suite/commands/pretrain.py; `--help` for usage."""
from sdae_suite.commands.pretrain import main

if __name__ == '__main__':
    raise SystemExit(main())
