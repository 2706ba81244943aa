# Demo of sdae_upernet.py on data/demo/ade (8 classes after reduce_zero_label) with the demo pretraining arch
# (pretrain/configs/*_demo.py: 192-d, 6 blocks, 3 heads, 8 px patches, 8x8 grid at 64 px): 128 px crops (16x16 grid),
# narrower heads, stride-8 maps rescaled by 2, 1, 0.5, 0.25: about a minute on 2 CPU cores.
#   tools/dist_train.sh seg_configs/sdae_upernet_demo.py 1 --pretrained work_dirs/<pretrain>/backbone.pth
# SOURCE: sdae_upernet.py (mmseg configs/mae UperNet; its header lists the recipe's own deviations). Everything not
# listed below is inherited unchanged (architecture, relative position bias, mmseg's weight-decay rule, layer decay 0.65).
#
# Deviations from sdae_upernet.py                           | reason
# ----------------------------------------------------------+-------------------------------------------------------------
# demo ViT: 192-d, 6 blocks, 3 heads, 8 px patches, blocks   | the demo pretraining arch (pretrain/configs/*_demo.py);
#   [1, 2, 3, 5]; rescales 2/1/0.5/0.25                      | stride-8 maps -> strides 4-32
# UPerHead 128 ch, auxiliary head 64 ch                      | about a minute on 2 CPU cores
# data/demo/ade (8 classes), 128 px crops, slide 128 / 85    | embedded demo data (tools/make_demo_data.py)
# 60 iterations, warmup 10 from 0.01, lr 3e-4, batch 4, fp32 | demo length; CPU has no AMP
# no total-batch check (custom_hooks = [])                   | a demo runs on any number of processes
_base_ = ['./sdae_upernet.py']

data_root = 'data/demo/ade/'
metainfo = dict(classes=('ground', 'sky', 'circle', 'square', 'triangle', 'star', 'ring', 'cross'))
num_classes = 8
crop_size = (128, 128)
embed_dim = 192
max_iters = 60

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=128, patch_size=8, embed_dim=embed_dim, depth=6, num_heads=3, out_indices=[1, 2, 3, 5]),
    neck=dict(embed_dim=embed_dim, rescales=[2, 1, 0.5, 0.25]),
    decode_head=dict(in_channels=[embed_dim] * 4, channels=128, num_classes=num_classes),
    auxiliary_head=dict(in_channels=embed_dim, channels=64, num_classes=num_classes),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(85, 85)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# BaseSegDataset, not ADE20KDataset: custom class names are not a subset of ADE's 150 (mmseg would refuse them).
dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo, img_suffix='.jpg',
               seg_map_suffix='.png', reduce_zero_label=True)
train_dataloader = dict(batch_size=4, num_workers=1, dataset=dict(dataset, pipeline=train_pipeline))
val_dataloader = dict(num_workers=1, dataset=dict(dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(type='FiniteGradOptimWrapper', optimizer=dict(lr=3e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=10),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=10, end=max_iters, by_epoch=False),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=20, max_keep_ckpts=1))
custom_hooks = []
