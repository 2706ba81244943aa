"""Importing this module installs safe checkpoint loading for mmengine: what our configs' ``custom_imports`` name so
that ``tools/train.py`` and a plain mmengine / mmdet / mmseg launcher alike load every checkpoint through the gate.
The why is in :mod:`sdae_suite.engine.checkpoint_io` (point 2); entry points call the function itself."""
from .checkpoint_io import install_safe_checkpoint_io

install_safe_checkpoint_io()
