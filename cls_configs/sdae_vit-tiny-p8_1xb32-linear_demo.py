# Demo of the ImageNet linear-probing recipe on the embedded pool (data/demo/pretrain/{train,val}: 6 classes, 2400 / 600
# procedural 128 px images), with the demo pretraining arch; under a minute on 2 CPU cores.
#   tools/dist_train.sh cls_configs/sdae_vit-tiny-p8_1xb32-linear_demo.py 1 --pretrained work_dirs/<pretrain>/backbone.pth
# SOURCE: ./sdae_vit-base-p16_8xb512-accum4-linear-90e_in1k.py (official SdAE / MAE main_linprobe.py; its header lists
# the recipe's own deviations). Everything not listed below is inherited unchanged: MAE's LARS (momentum 0.9, trust
# 0.001, wd 0), warmup from 0 + cosine to 0, the frozen encoder in eval mode, cls token -> final norm ->
# BatchNorm1d(affine=False) -> Linear, MAE's one-draw crop + flip, the eval transform.
#
# Deviations from the recipe                    | here                                    | reason
# ----------------------------------------------+-----------------------------------------+----------------------------
# ViT-B/16, 224 px (eval 256 -> 224)            | 192-d, 6 blocks, 3 heads, 8 px patches, | the demo pretraining arch
#                                               | 64 px (eval 73 -> 64)                   | (pretrain/configs/*_demo.py)
# ImageNet-1K, 1000 classes                     | demo pool, 6 classes                    | embedded data, offline
# 90 epochs, 10 warmup; batch 16384 (512 x 8 x  | 4 epochs, 1 warmup; batch 32, no        | a minute on 2 CPU cores;
#   4 accumulated): ~7,000 steps                |   accumulation: 300 steps               | LARS needs steps, not images
# lr = blr 0.1 x batch / 256 (6.4)              | 6.4, not 0.1 x 32 / 256                 | LARS steps are relative to
#                                               |                                         | the weight norm (lr x 0.001
#                                               |                                         | each); measured on the MAE
#                                               |                                         | demo encoder's features:
#                                               |                                         | lr 6.4 at batch 256, 45
#                                               |                                         | steps: top-1 16.8 (chance);
#                                               |                                         | 300 steps: 37.3 (Adam 39.5)
# AMP; 10 workers                               | fp32; 1 worker                          | CPU
# total batch enforced                          | not enforced (no SdAERecipeBatchHook)   | a demo runs anywhere
_base_ = ['./sdae_vit-base-p16_8xb512-accum4-linear-90e_in1k.py']

num_classes = 6
input_size = 64
max_epochs = 4
warmup_epochs = 1
batch_size = 32
lr = 6.4  # the recipe's lr, not blr x 32 / 256: see the table
data_root = 'data/demo/pretrain'

model = dict(num_classes=num_classes, backbone=dict(img_size=input_size, patch_size=8, embed_dim=192, depth=6,
                                                    num_heads=3))
train_dataloader = dict(
    batch_size=batch_size, num_workers=1, pin_memory=False,
    dataset=dict(data_root=data_root, transform=dict(input_size=input_size)))
val_dataloader = dict(
    batch_size=100, num_workers=1, pin_memory=False,
    dataset=dict(data_root=data_root, transform=dict(input_size=input_size)))
test_dataloader = val_dataloader
optim_wrapper = dict(
    _delete_=True, type='FiniteGradOptimWrapper',
    optimizer=dict(type='MAELARS', lr=lr, weight_decay=0.0, momentum=0.9, trust_coefficient=0.001))
param_scheduler = [
    dict(type='LinearWarmupFromZeroLR', by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=warmup_epochs, end=max_epochs,
         T_max=max_epochs - warmup_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(max_keep_ckpts=1))
log_processor = dict(window_size=5)
custom_hooks = [dict(type='RNGStateHook'), dict(type='SkippedImagesHook')]
