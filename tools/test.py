#!/usr/bin/env python
"""Evaluate a fine-tuned detector or segmentor checkpoint; writes ``<work_dir>/test_results.json`` (COCO bbox/segm AP
for mmdet configs, mIoU/mAcc/aAcc for mmseg configs; the config's default_scope says which).

Implemented in sdae_suite/commands/test.py; `--help` for usage."""
from sdae_suite.commands.test import main

if __name__ == '__main__':
    main()
