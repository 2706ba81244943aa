# Linear probing on ImageNet-1K of a frozen ViT-B/16 pretrained with SdAE (or MAE, or anything the loader reads).
# SOURCE: github.com/AbrahamYabo/SdAE main_linprobe.py (= facebookresearch/mae's, with its util/lars.py, util/crop.py,
#   util/lr_sched.py, models_vit.py); second reading: mmpretrain v1.2.0
#   configs/mae/benchmarks/vit-base-p16_8xb2048-linear-coslr-90e_in1k.py.
# Same as the source (tests/test_cls_recipes.py checks each against the source's rule):
#   90 epochs; batch 16384 = 8 GPUs x 512 x 4 accumulated (MAE's single-node command: --batch_size 512 --accum_iter 4;
#   enforced, accumulation counted); lr = blr 0.1 x 16384 / 256 = 6.4; MAE's LARS (momentum 0.9, trust 0.001, wd 0,
#   1-D parameters not adapted, lr outside the momentum buffer); warmup from 0 over 10 epochs, then cosine to 0, per
#   iteration; features = cls token after the encoder's final norm -> BatchNorm1d(768, affine=False, eps 1e-6) ->
#   Linear (trunc_normal 0.01); only the head trains (769,000 parameters), the encoder frozen in eval mode; MAE's
#   one-draw RandomResizedCrop 224 bicubic + hflip, plain cross-entropy; AMP; eval Resize 256 bicubic -> CenterCrop
#   224; top-1 / top-5 each epoch.
#
# Deliberate deviations from the source                       | reason
# ------------------------------------------------------------+-----------------------------------------------------------
# with accumulation the lr of an optimizer step is the         | mmengine steps its schedulers every iteration; at most 3
#   schedule's value at the group's last micro-batch, not its  | iterations later in a 90-epoch schedule (< 0.1 % of lr in
#   first                                                      | warmup, less after)
# the encoder is in eval mode (the source calls model.train()  | the same computation: MAE's ViT-B has no dropout and drop
#   on the whole model)                                        | path 0 in linear probing, LayerNorm has no running stats
# best and last epoch reported, checkpoints every epoch        | as in the fine-tuning recipe
#
#   tools/dist_train.sh cls_configs/sdae_vit-base-p16_8xb512-accum4-linear-90e_in1k.py 8 --pretrained CKPT --data-root ROOT
_base_ = ['./_base_/cls_runtime.py']

num_classes = 1000
recipe_batch = 16384  # 8 GPUs x 512 x 4 accumulated
blr = 0.1
lr = blr * recipe_batch / 256
max_epochs = 90
warmup_epochs = 10
input_size = 224

model = dict(
    type='SdAEImageClassifier',
    protocol='linear',
    num_classes=num_classes,
    backbone=dict(img_size=input_size, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                  drop_path_rate=0.0, init_cfg=dict(type='Pretrained', checkpoint=None, branch='student')),
)

train_dataloader = dict(
    batch_size=512, num_workers=10, persistent_workers=False, pin_memory=True, drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True), collate_fn=dict(type='default_collate'),
    worker_init_fn=dict(type='seed_pretrain_worker'),
    dataset=dict(type='SdAEImageFolder', data_root='data/imagenet', split='train',
                 transform=dict(type='linprobe', input_size=input_size)))

optim_wrapper = dict(
    type='AmpOptimWrapper', loss_scale='dynamic', accumulative_counts=4,
    optimizer=dict(type='MAELARS', lr=lr, weight_decay=0.0, momentum=0.9, trust_coefficient=0.001),
)
param_scheduler = [
    dict(type='LinearWarmupFromZeroLR', by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=warmup_epochs, end=max_epochs,
         T_max=max_epochs - warmup_epochs, convert_to_iter_based=True),
]
# mmengine's EpochBasedTrainLoop that also resumes mid-epoch, from the checkpoint a SIGTERM / SIGUSR1 writes
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
custom_hooks = [dict(type='SdAERecipeBatchHook', batch_size=recipe_batch), dict(type='RNGStateHook'),
                dict(type='SkippedImagesHook')]
