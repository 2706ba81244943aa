"""Run infrastructure shared by pretraining, fine-tuning and the pipeline: the one atomic writer (``atomic``), safe
checkpoint loading and its one global installation (``checkpoint_io``), the hooks and optimizer wrapper our configs
choose (``hooks``, ``optim_wrapper``), CPU / multi-process launch (``launch``) and the run record (``run_record``).

Importing registers our own classes under our own names (``CrashSafeCheckpointHook``, ``RNGStateHook``,
``SdAERecipeBatchHook``, ``SkippedImagesHook``, ``FiniteGradOptimWrapper``, ``LinearWarmupFromZeroLR``,
the ``sdae_atomic_local`` file backend) and changes nothing else.
"""
from . import hooks, optim_wrapper, schedulers, workers  # noqa: F401  (registers our hooks, wrapper, schedules)
from .checkpoint_io import install_safe_checkpoint_io, safe_torch_load

__all__ = ['install_safe_checkpoint_io', 'safe_torch_load']
