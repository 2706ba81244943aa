"""SdAE transfer benchmark suite: one import namespace for the whole project.

Sub-packages, lower layers first (a module imports only from its own layer or below; tests/test_layers.py checks it):
``contracts`` (the typed formats passed between stages) and ``engine`` (checkpoint I/O, hooks, launch, run records) ->
``backbones`` (the ViT, its mmdet/mmseg adapter, necks, layer decay, the checkpoint-format reader), ``demodata``,
``preflight`` -> ``probes``, ``classification`` (ImageNet fine-tuning and linear probing) -> ``pretrain``
(SdAE / MAE), ``visualize``, ``benchmarks`` -> ``report``, ``pipeline`` ->
``commands`` (what tools/*.py run). Importing a library sub-package registers our own classes under our own names
and changes nothing else; the one global installation, safe checkpoint loading, is
:func:`sdae_suite.engine.checkpoint_io.install_safe_checkpoint_io`, made on import by ``sdae_suite.commands`` (every
entry point) and ``sdae_suite.engine.safe_io_setup`` (configs' ``custom_imports``).
"""
from pathlib import Path

# The checkout this package is installed from in editable mode (tools/install.sh): configs, tools and data live there.
REPO_ROOT = Path(__file__).resolve().parent.parent
