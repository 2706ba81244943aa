# Demo settings shared by the demo detection configs (data/demo/coco from tools/make_demo_data.py, 224-288 px images,
# 6 shape classes), trained for real in about 2 minutes on 2 CPU cores. The backbone is the demo pretraining arch
# (pretrain/configs/*_demo.py: 192-d, 6 blocks, 3 heads, 8 px patches, pretrained on 64 px crops = 8x8 grid);
# with 8 px patches the maps have stride 8, so the pyramids rescale by 2, 1, 0.5, 0.25 to get strides 4-32.
# The demo configs pull these in with {{_base_.demo_*}} so that the two demo recipes share them without copies.
demo_data_root = 'data/demo/coco/'
demo_metainfo = dict(
    classes=('circle', 'square', 'triangle', 'star', 'ring', 'cross'),
    palette=[(220, 20, 60), (0, 128, 255), (0, 200, 0), (255, 200, 0), (160, 32, 240), (0, 0, 0)])
demo_num_classes = 6
demo_image_size = (160, 160)

demo_embed_dim = 192
demo_vit = dict(img_size=160, patch_size=8, embed_dim=demo_embed_dim, depth=6, num_heads=3, drop_path_rate=0.1,
                out_indices=[1, 2, 3, 5])  # the [3, 5, 7, 11] of 12 blocks, for 6
# 20x20 grid: 2x2 windows; global blocks' decomposed rel-pos tables sized for that grid (39 x head_dim)
demo_vitdet = dict(demo_vit, out_indices=[5], window_size=10, global_attn_indexes=[2, 5], rel_pos_img_size=160)
demo_rescales = [2, 1, 0.5, 0.25]
demo_neck_channels = 128

demo_rpn_head = dict(in_channels=demo_neck_channels, feat_channels=demo_neck_channels)
demo_roi_head = dict(
    bbox_roi_extractor=dict(out_channels=demo_neck_channels),
    bbox_head=dict(in_channels=demo_neck_channels, conv_out_channels=demo_neck_channels, fc_out_channels=256,
                   num_classes=demo_num_classes),
    mask_roi_extractor=dict(out_channels=demo_neck_channels),
    mask_head=dict(in_channels=demo_neck_channels, conv_out_channels=demo_neck_channels, num_classes=demo_num_classes))
demo_model_train_cfg = dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300), rcnn=dict(sampler=dict(num=128)))
# <= 12 objects per image; score_thr 0 keeps the top 20 even for a barely trained model, so COCO AP is always defined
demo_model_test_cfg = dict(rpn=dict(nms_pre=500, max_per_img=100), rcnn=dict(score_thr=0.0, max_per_img=20))

demo_train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=demo_image_size, ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=demo_image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='PackDetInputs'),
]
demo_test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=demo_image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
demo_train_dataloader = dict(
    batch_size=2, num_workers=1, persistent_workers=True,
    sampler=dict(_delete_=True, type='InfiniteSampler', shuffle=True), batch_sampler=None,
    dataset=dict(data_root=demo_data_root, metainfo=demo_metainfo, ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), filter_cfg=dict(filter_empty_gt=True, min_size=4),
                 pipeline=demo_train_pipeline))
demo_val_dataloader = dict(
    batch_size=2, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=demo_data_root, metainfo=demo_metainfo, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=demo_test_pipeline))
demo_val_evaluator = dict(ann_file=demo_data_root + 'annotations/instances_val.json')

# 80 (was 100 until 2026-12-03): `make demo` must fit 20 min on 2 cores; 3 runs x 20 iterations = 66 s
demo_max_iters = 80
demo_train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=demo_max_iters, val_interval=demo_max_iters)
demo_optim_wrapper = dict(type='FiniteGradOptimWrapper', optimizer=dict(lr=3e-4, weight_decay=0.05),
                          paramwise_cfg=dict(layer_decay_rate=0.75))
demo_param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=10),
    dict(type='MultiStepLR', begin=0, end=demo_max_iters, by_epoch=False, milestones=[64], gamma=0.1),
]
# iteration-based: validation metrics are logged at their iteration, not at 'epoch 0' (mmengine's default)
demo_default_hooks = dict(logger=dict(interval=10, log_metric_by_epoch=False),
                          checkpoint=dict(by_epoch=False, interval=25, max_keep_ckpts=1))  # resumable after a kill
demo_log_processor = dict(by_epoch=False)
demo_custom_hooks = []  # no recipe total batch to enforce: a demo runs on any number of processes
