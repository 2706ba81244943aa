# Runtime shared by every pretraining config (mmengine Runner).
# Our classes, and safe checkpoint loading, also for a Runner built from this config outside tools/pretrain.py.
custom_imports = dict(imports=['sdae_suite.pretrain', 'sdae_suite.engine', 'sdae_suite.engine.safe_io_setup'],
                      allow_failed_imports=False)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),  # loss, lr, time, ETA
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Epoch checkpoints only: the resume state (RNG, sampler position, EMA schedule) is exact at epoch boundaries.
    checkpoint=dict(type='CrashSafeCheckpointHook', interval=1, max_keep_ckpts=3, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
custom_hooks = [
    # Official SdAE: EMA once per epoch, cosine momentum 0.96 -> 0.99 (ignored by objective='mae').
    dict(type='EMATeacherHook', momentum=0.96, end_momentum=0.99, by_epoch=True),
    dict(type='RNGStateHook'),
    dict(type='PretrainMetaHook'),
    dict(type='SkippedImagesHook'),
]
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),  # tools/pretrain.py switches to gloo without GPUs
)
log_processor = dict(window_size=50, by_epoch=True)
log_level = 'INFO'
# <work_dir>/<timestamp>/vis_data/scalars.json, and TensorBoard event files in the same folder
# (tensorboard --logdir <work_dir>)
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
load_from = None
resume = False
# A fixed seed is part of exact resume (the data sampler's shuffling seed is derived from it); different per rank so
# that ranks draw different masks.
randomness = dict(seed=0, diff_rank_seed=True)
