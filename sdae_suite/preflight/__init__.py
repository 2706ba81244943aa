"""Checks of a run's inputs before it starts, each failing with one message that names the file and the fix.

``dataset``: COCO / ADE20K data, and ``imagefolder``: ImageNet-format class folders, for tools/check_dataset.py (a
whole root) and for every tools/train.py and tools/test.py run (the datasets its config reads); ``findings``: what
both report, printed the same way. ``config_keys``: --cfg-options keys that name nothing (typos).
``checkpoints``: a file that is not a checkpoint at all, and a checkpoint that is not a model of the config.
"""
