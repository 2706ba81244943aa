# SdAE on the embedded demo pool (data/demo/pretrain, 2400 procedural 128 px images) in about 2-3 minutes on 2 CPU
# cores: a ViT-Tiny-width encoder (192-d, 6 blocks) on 64 px crops with 8 px patches (64 patches, 16 visible, 3 folds of
# 16 masked), a 2 x 128 decoder. Same code and recipe shape as the ViT-B config; only sizes and the EMA setup change.
#   tools/pretrain.sh pretrain/configs/sdae_vit-tiny-p8_demo.py 1
_base_ = ['./sdae_vit-base-p16_300e_in1k.py']
img_size = 64
model = dict(
    encoder=dict(img_size=img_size, patch_size=8, embed_dim=192, depth=6, num_heads=3, drop_path_rate=0.0),
    decoder=dict(embed_dim=128, depth=2, num_heads=4),
    # A few epochs are far too short for the official random-init teacher with a 0.96 -> 0.99 per-epoch EMA (the
    # targets would stay those of a random network): start from a copy and follow the student per iteration.
    teacher_init='copy',
)
custom_hooks = [
    dict(type='EMATeacherHook', momentum=0.99, end_momentum=1.0, by_epoch=False),
    dict(type='RNGStateHook'),
    dict(type='PretrainMetaHook'),
    dict(type='SkippedImagesHook'),
]
train_dataloader = dict(
    batch_size=64, num_workers=1, pin_memory=False,  # one worker keeps up (~50 ms per batch) and leaves the cores
    dataset=dict(data_root='data/demo/pretrain/train', img_size=img_size),
)
blr = 1.5e-3  # small model, few steps: a larger lr than ViT-B's
amp = False
warmup_epochs = 1
train_cfg = dict(max_epochs=6)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(max_keep_ckpts=1))
log_processor = dict(window_size=10)
