# ViTDet Mask R-CNN, 100 epochs, 1024 px large-scale jitter, with a ViT-B/16 (MAE: 51.6 box / 45.7-45.9 mask AP).
# Window attention (14) in all blocks except the global ones 2, 5, 8, 11, zero-initialised relative position bias,
# abs pos-embed kept at the 224 grid and resized per input, simple feature pyramid from the last map (P2-P6, LayerNorm),
# 2-conv RPN, 4conv1fc heads with LN, AdamW lr 1e-4 wd 0.1, layer decay 0.7, batch 64, 184,375 iterations with steps
# at epochs 88 and 96, 250 warmup iterations, AMP. Everything else as sdae_maskrcnn.py.
_base_ = ['./sdae_maskrcnn.py']

image_size = (1024, 1024)
head_norm = dict(type='LN2d', requires_grad=True)  # channel LayerNorm on maps (timm LayerNorm2d, see backbones/registry.py)

model = dict(
    data_preprocessor=dict(pad_size_divisor=32,
                           batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        drop_path_rate=0.1,
        out_indices=[11],
        with_cls_token=False,
        window_size=14,
        global_attn_indexes=[2, 5, 8, 11],
        use_rel_pos_bias=True),
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels={{_base_.embed_dim}}, out_channels=256,
              scale_factors=(4.0, 2.0, 1.0, 0.5), use_p6=True),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(norm_cfg=head_norm, reg_decoded_bbox=False, loss_bbox=dict(_delete_=True, type='L1Loss',
                                                                                     loss_weight=1.0)),
        mask_head=dict(norm_cfg=head_norm)))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=4, sampler=dict(type='InfiniteSampler'), dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 184375
interval = 5000
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=interval)
optim_wrapper = dict(optimizer=dict(lr=1e-4, weight_decay=0.1), paramwise_cfg=dict(layer_decay_rate=0.7))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[163889, 177546], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=50, log_metric_by_epoch=False),  # val metrics at their iteration
                     checkpoint=dict(by_epoch=False, interval=interval, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(base_batch_size=64)
