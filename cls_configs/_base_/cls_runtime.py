# Runtime shared by the ImageNet classification configs (fine-tuning and linear probing): an mmengine Runner with the
# suite's hooks. Not a recipe on its own: each recipe config states its source and deviations.
# default_scope 'mmengine': classification needs neither mmdet nor mmseg (tools/train.py reads it as the cls task).
default_scope = 'mmengine'
# Our classes, and safe checkpoint loading, also for a Runner built from this config outside tools/train.py.
custom_imports = dict(imports=['sdae_suite.backbones', 'sdae_suite.classification', 'sdae_suite.engine',
                               'sdae_suite.engine.safe_io_setup'], allow_failed_imports=False)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),  # loss, lr, time, ETA
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Epoch checkpoints, rotated crash-safely; the best top-1 so far is kept too (the official code reports the max
    # over epochs, and its score travels in every checkpoint's message hub).
    checkpoint=dict(type='CrashSafeCheckpointHook', interval=1, max_keep_ckpts=2, save_last=True,
                    save_best='accuracy/top1', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
custom_hooks = [dict(type='RNGStateHook'), dict(type='SkippedImagesHook')]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))  # tools/train.py switches to gloo without GPUs
log_processor = dict(window_size=50, by_epoch=True)
log_level = 'INFO'
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
load_from = None
resume = False
# MAE seeds each rank with seed + rank: different augmentations and mixes per rank.
randomness = dict(seed=0, diff_rank_seed=True)

data_root = 'data/imagenet'  # <data_root>/train/<class>/*.JPEG and <data_root>/val/<class>/*.JPEG
dataloader = dict(
    num_workers=10,
    persistent_workers=False,  # fresh workers each epoch, seeded from the (resumable) main RNG
    pin_memory=True,
    collate_fn=dict(type='default_collate'),
    worker_init_fn=dict(type='seed_pretrain_worker'),
)
val_dataloader = dict(
    dataloader, batch_size=128, drop_last=False, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='SdAEImageFolder', data_root=data_root, split='val', transform=dict(type='eval', input_size=224)))
test_dataloader = val_dataloader
val_evaluator = dict(type='SdAETopKAccuracy', topk=(1, 5))
test_evaluator = val_evaluator
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
