# UperNet on ADE20K 512x512, 160k iterations, batch 16 (8 GPUs x 2), with a ViT-B/16 — mmseg's MAE recipe (48.13 mIoU
# single scale) with our backbone: blocks [3, 5, 7, 11] -> multi-level adapter (x4, x2, x1, x0.5) -> UPerHead 768 ch +
# FCN auxiliary head; pos-embed resized bicubically 14x14 -> 32x32 at load; zero-initialised relative position bias;
# drop path 0.1; AdamW lr 1e-4 betas (0.9, 0.999) wd 0.05, layer decay 0.65; 1500 it linear warmup then poly; AMP;
# slide inference 512 / stride 341.
# Pretrained weights: `tools/train.py CFG --pretrained CKPT` or --cfg-options model.backbone.init_cfg.checkpoint=CKPT.
_base_ = ['mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py']
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

embed_dim = 768
norm_cfg = dict(type='BN', requires_grad=True)  # becomes SyncBN only when a process group exists (sync_bn below)
sync_bn = 'torch'

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='SdAEViT',
        img_size=512,  # checkpoint pos-embed resized to the 32x32 grid once, at load (logged)
        patch_size=16,
        embed_dim=embed_dim,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        drop_path_rate=0.1,
        out_indices=[3, 5, 7, 11],
        final_norm='none',
        use_rel_pos_bias=True,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=None, branch='student')),
    neck=dict(embed_dim=embed_dim, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[embed_dim] * 4, channels=768, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=embed_dim, norm_cfg=norm_cfg))

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',  # tools/train.py switches to fp32 OptimWrapper on CPU-only machines
    constructor='LayerDecayConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=0.65))
fp16 = None  # mmseg 0.x key in the base file; AMP is the optim wrapper above
