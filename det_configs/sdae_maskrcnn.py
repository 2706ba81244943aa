# Mask R-CNN 1x on COCO with a ViT-B/16, the CAE protocol (the one SdAE's 48.9 box AP is compared under):
# blocks [3, 5, 7, 11] -> multi-level adapter (x4, x2, x1, x0.5) -> FPN, 4conv1fc box head with GIoU, multi-scale
# 480-800 training with random crop, AdamW lr 3e-4 wd 0.05, layer decay 0.75, drop path 0.2, 12 epochs (steps at 9, 11),
# batch 32 (8 GPUs x 4), AMP. CAE 300 ep: 48.3 box / 42.7 mask AP.
# Pretrained weights: `tools/train.py CFG --pretrained CKPT` or --cfg-options model.backbone.init_cfg.checkpoint=CKPT
# (any layout backbones/pretrained.py reads; raw pretraining / official SdAE files need branch='student'|'teacher').
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

embed_dim = 768
norm_cfg = dict(type='BN', requires_grad=True)  # becomes SyncBN only when a process group exists (sync_bn below)
sync_bn = 'torch'

model = dict(
    backbone=dict(
        _delete_=True,
        type='SdAEViT',
        img_size=224,  # pos-embed kept at the pretraining grid, resized per input size (logged once)
        patch_size=16,
        embed_dim=embed_dim,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        drop_path_rate=0.2,
        out_indices=[3, 5, 7, 11],
        final_norm='none',
        use_rel_pos_bias=False,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=None, branch='student')),
    neck=[
        dict(type='Feature2Pyramid', embed_dim=embed_dim, rescales=[4, 2, 1, 0.5], norm_cfg=norm_cfg),
        dict(type='FPN', in_channels=[embed_dim] * 4, out_channels=256, num_outs=5, norm_cfg=norm_cfg),
    ],
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=norm_cfg,
            reg_decoded_bbox=True,
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0)),
        mask_head=dict(norm_cfg=norm_cfg)))

# DETR-style multi-scale training with random crop, as in CAE / Swin Mask R-CNN.
ms_scales = [(1333, s) for s in range(480, 801, 32)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice', transforms=[
        [dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True)],
        [dict(type='RandomChoiceResize', scales=[(1333, 400), (1333, 500), (1333, 600)], keep_ratio=True),
         dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
         dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True)],
    ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',  # tools/train.py switches to fp32 OptimWrapper on CPU-only machines
    constructor='LayerDecayConstructor',
    optimizer=dict(type='AdamW', lr=3e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=0.75))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9, 11], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=32)
default_hooks = dict(checkpoint=dict(max_keep_ckpts=2))
