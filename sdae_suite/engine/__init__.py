"""Run infrastructure shared by pretraining, fine-tuning and the pipeline: the one atomic writer (``atomic``), safe
checkpoint loading and its one global installation (``checkpoint_io``), the hooks and optimizer wrapper our configs
choose (``hooks``, ``optim_wrapper``, ``loops``), CPU / multi-process launch (``launch``), checkpoint-and-stop on
SIGTERM / SIGUSR1 (``preemption``) and the run record (``run_record``).

Importing registers our own classes under our own names (``CrashSafeCheckpointHook``, ``RNGStateHook``,
``SdAERecipeBatchHook``, ``SkippedImagesHook``, ``PreemptionCheckpointHook``, ``ResumableEpochBasedTrainLoop``,
``FiniteGradOptimWrapper``, ``LinearWarmupFromZeroLR``, the ``sdae_atomic_local`` file backend) and changes nothing
else.
"""
from . import hooks, loops, optim_wrapper, schedulers, workers  # noqa: F401  (registers our hooks, wrapper, schedules)
from .checkpoint_io import install_safe_checkpoint_io, safe_torch_load

__all__ = ['install_safe_checkpoint_io', 'safe_torch_load']
