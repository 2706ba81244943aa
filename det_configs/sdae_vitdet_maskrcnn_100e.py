# ViTDet Mask R-CNN, 100 epochs, 1024 px large-scale jitter, with a ViT-B/16 (MAE: 51.6 box / 45.7-45.9 mask AP).
# SOURCE: github.com/open-mmlab/mmdetection projects/ViTDet (commit f7497439): configs/vitdet_mask-rcnn_vit-b-mae_lsj-100e.py
#   with configs/lsj-100e_coco-instance.py, vitdet/vit.py (ViT), vitdet/simple_fpn.py (SimpleFPN), vitdet/
#   layer_decay_optimizer_constructor.py; itself a port of github.com/facebookresearch/detectron2 projects/ViTDet
#   (configs/COCO/mask_rcnn_vitdet_b_100ep.py, detectron2/modeling/backbone/vit.py), whose numbers are quoted above.
# Same as the source: window attention (14) in all blocks except the global ones 2, 5, 8, 11; decomposed relative
#   positions in every block (rel_pos_h / rel_pos_w, zero-initialised: 27 x 64 for windows, 127 x 64 for the 64x64
#   global grid, linearly interpolated for other sizes); no cls token; abs position table kept at the 224 grid (14x14)
#   and resized bicubically to each input; no final norm; simple feature pyramid from the last map (x4, x2, x1, x0.5
#   + P6 max-pool, LayerNorm, 256 ch); 2-conv RPN; 4conv1fc box head and FCN mask head with LayerNorm; L1 box loss;
#   LSJ 1024 px (scale 0.1-2.0, crop, pad 114); AdamW lr 1e-4 betas (0.9, 0.999) wd 0.1, layer decay 0.7 (lr x
#   0.7^(13 - depth): embeddings 0, block i -> i+1, neck/heads 13); total batch 64 (enforced, see below); 184,375
#   iterations, steps at 163,889 and 177,546 (epochs 88, 96); 250 warmup iterations from 0.001; AMP.
# Weight decay as mmdet's ViTDet constructor runs it (decay_rule='mmdet_vitdet'): NOT decayed: the backbone blocks' norms
#   (norm1 / norm2) and the position table; decayed: every bias, the patch embedding, rel_pos_h / rel_pos_w, and the
#   neck's and heads' LayerNorms and biases. (detectron2's original: no decay on every norm incl. neck/heads, decay on
#   biases; pos_embed exempt.)
#
# Deliberate deviations from the source                     | reason
# ----------------------------------------------------------+-------------------------------------------------------------
# backbone SdAEViT(img_size=224, rel_pos_img_size=1024)     | the same parameters and computation as the source's ViT
#   instead of ViT(img_size=1024, pretrain_img_size=224)     | (checked against timm's samvit in tests/test_vitdet_rel_pos.py)
#                                                           | in the suite's one ViT, which SdAE checkpoints load into
# SdAELN2d (timm LayerNorm2d, eps 1e-6) for 'LN2d'           | same function; mmdet's own LN2d name is left free so that
#                                                           | projects.ViTDet can be imported next to the suite
# no Fp16CompresssionHook (DDP gradients all-reduced in fp32)| a communication-only optimisation; fp32 all-reduce is exact
# total batch 64 is enforced: on 8 GPUs set batch_size=8     | the source leaves auto_scale_lr off with 4 per GPU (batch 64
#   (SdAERecipeBatchHook refuses other totals unless         | needs 16 GPUs); any other total would change the epochs
#   auto_scale_lr.enable=True, then lr scaled and logged)    | seen at the recipe's lr and milestones without a word
# checkpoints kept: 2 (source: 5)                            | disk only
_base_ = ['./sdae_maskrcnn.py']

image_size = (1024, 1024)
recipe_batch = 64  # 184,375 iterations x 64 images = 100 epochs of COCO train2017
head_norm = dict(type='SdAELN2d', requires_grad=True)  # channel LayerNorm on maps (see backbones/registry.py)

model = dict(
    data_preprocessor=dict(pad_size_divisor=32,
                           batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        img_size=224,  # the abs position table stays at the pretraining grid and is resized per input (as ViTDet)
        freeze_pos_embed=False,  # ViTDet trains it (no weight decay on it)
        drop_path_rate=0.1,
        out_indices=[11],
        with_cls_token=False,
        window_size=14,
        global_attn_indexes=[2, 5, 8, 11],
        use_rel_pos=True,
        rel_pos_img_size=image_size),  # global blocks' rel_pos tables sized for the 64x64 grid
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels={{_base_.embed_dim}}, out_channels=256,
              scale_factors=(4.0, 2.0, 1.0, 0.5), use_p6=True),
    rpn_head=dict(num_convs=2),
    train_cfg=dict(rpn_proposal=dict(nms_pre=2000, max_per_img=1000)),  # mmdet's Mask R-CNN default
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
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
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
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=interval,
                 dynamic_intervals=[(max_iters // interval * interval + 1, max_iters)])  # validate at the last iter
optim_wrapper = dict(optimizer=dict(lr=1e-4, weight_decay=0.1),
                     paramwise_cfg=dict(layer_decay_rate=0.7, decay_rule='mmdet_vitdet'))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[163889, 177546], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=50, log_metric_by_epoch=False),  # val metrics at their iteration
                     checkpoint=dict(by_epoch=False, interval=interval, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=recipe_batch)
custom_hooks = [dict(type='SdAERecipeBatchHook', batch_size=recipe_batch)]
