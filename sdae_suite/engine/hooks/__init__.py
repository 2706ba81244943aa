"""The hooks our configs choose, registered in mmengine's HOOKS under names of their own (configs choose them
with ``type=...``; child registries such as mmdet's and mmseg's find them there)."""
from .checkpoint import CrashSafeCheckpointHook, NonFiniteWeightsError, is_complete_checkpoint
from .preemption import PreemptionCheckpointHook
from .rank_watch import RankHeartbeatHook
from .recipe_batch import RecipeBatchError, SdAERecipeBatchHook
from .rng_state import RNGStateHook
from .skipped_images import SkippedImagesHook

__all__ = ['CrashSafeCheckpointHook', 'NonFiniteWeightsError', 'PreemptionCheckpointHook', 'RNGStateHook',
           'RankHeartbeatHook', 'RecipeBatchError', 'SdAERecipeBatchHook', 'SkippedImagesHook',
           'is_complete_checkpoint']
