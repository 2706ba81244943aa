"""Fixtures shared by several test modules."""
from __future__ import annotations

from pathlib import Path

import pytest

from sdae_suite.commands import make_demo_data  # importing the commands installs safe checkpoint loading, as in every

#                                                entry point: the tests drive mmengine Runners the way tools/ do


@pytest.fixture(scope='session')
def demo(tmp_path_factory) -> Path:
    """A tiny embedded data set at <workspace>/data/demo (the demo configs read data/demo from the working directory):
    6 pool images, 4 train / 2 val COCO and ADE images. Read-only: a test that breaks data breaks a copy."""
    out = tmp_path_factory.mktemp('workspace') / 'data/demo'
    assert make_demo_data.main(['--out', str(out), '--num-pretrain', '6', '--num-train', '4', '--num-val', '2',
                                '--workers', '1']) == 0
    return out
