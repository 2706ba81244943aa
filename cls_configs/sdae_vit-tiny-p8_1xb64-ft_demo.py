# Demo of the ImageNet fine-tuning recipe on the embedded pool (data/demo/pretrain/{train,val}: 6 classes, 2400 / 600
# procedural 128 px images), with the demo pretraining arch; a minute or two on 2 CPU cores.
#   tools/dist_train.sh cls_configs/sdae_vit-tiny-p8_1xb64-ft_demo.py 1 --pretrained work_dirs/<pretrain>/backbone.pth
# SOURCE: ./sdae_vit-base-p16_8xb128-ft-100e_in1k.py (official SdAE / MAE main_finetune.py; its header lists the
# recipe's own deviations). Everything not listed below is inherited unchanged: layer decay 0.65 and its weight-decay
# groups, AdamW, warmup from 0 + cosine to min_lr, RandAugment / random erasing / Mixup / CutMix / label smoothing, the
# pooled head with fc_norm, the eval transform.
#
# Deviations from the recipe                    | here                                    | reason
# ----------------------------------------------+-----------------------------------------+----------------------------
# ViT-B/16, 224 px (eval 256 -> 224)            | 192-d, 6 blocks, 3 heads, 8 px patches, | the demo pretraining arch
#                                               | 64 px (eval 73 -> 64)                   | (pretrain/configs/*_demo.py)
# ImageNet-1K, 1000 classes                     | demo pool, 6 classes                    | embedded data, offline
# 100 epochs, 5 warmup; batch 1024, lr 2e-3     | 4 epochs, 1 warmup; batch 64, lr 1e-3   | minutes on 2 CPU cores
# AMP; 10 workers                               | fp32; 1 worker                          | CPU
# total batch enforced                          | not enforced (no SdAERecipeBatchHook)   | a demo runs anywhere
_base_ = ['./sdae_vit-base-p16_8xb128-ft-100e_in1k.py']

num_classes = 6
input_size = 64
max_epochs = 4
warmup_epochs = 1
lr = 1e-3
data_root = 'data/demo/pretrain'

model = dict(
    num_classes=num_classes,
    backbone=dict(img_size=input_size, patch_size=8, embed_dim=192, depth=6, num_heads=3),
    mixup=dict(num_classes=num_classes))
train_dataloader = dict(
    batch_size=64, num_workers=1, pin_memory=False,
    dataset=dict(data_root=data_root, transform=dict(input_size=input_size)))
val_dataloader = dict(
    batch_size=100, num_workers=1, pin_memory=False,
    dataset=dict(data_root=data_root, transform=dict(input_size=input_size)))
test_dataloader = val_dataloader
optim_wrapper = dict(
    _delete_=True, type='FiniteGradOptimWrapper', constructor='LayerDecayConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.65, decay_rule='timm'),
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.05))
param_scheduler = [
    dict(type='LinearWarmupFromZeroLR', by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-6 / lr, by_epoch=True, begin=warmup_epochs, end=max_epochs,
         T_max=max_epochs - warmup_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(max_keep_ckpts=1))
log_processor = dict(window_size=10)
custom_hooks = [dict(type='RNGStateHook'), dict(type='SkippedImagesHook')]
