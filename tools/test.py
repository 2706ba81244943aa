#!/usr/bin/env python
"""Evaluate a fine-tuned detector or segmentor checkpoint; writes ``<work_dir>/test_results.json`` (COCO bbox/segm AP
for mmdet configs, mIoU/mAcc/aAcc for mmseg configs; the config's default_scope says which).

Implemented in sdae_suite/commands/test.py; `--help` for usage."""
import importlib.util

if importlib.util.find_spec('sdae_suite') is None:
    raise SystemExit(f'{__file__}: sdae_suite is not installed for this Python; run `make install` (tools/install.sh)')
from sdae_suite.commands.test import main  # noqa: E402

if __name__ == '__main__':
    main()
