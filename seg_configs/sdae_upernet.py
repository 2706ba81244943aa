# UperNet on ADE20K 512x512, 160k iterations, with a ViT-B/16 -- mmseg's MAE recipe (48.13 mIoU single scale) with our
# backbone.
# SOURCE: github.com/open-mmlab/mmsegmentation (v1.2.2, the pinned package) configs/mae/
#   mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py (inherited below via mmseg::), its _base_ files
#   (models/upernet_mae.py, datasets/ade20k.py, schedules/schedule_160k.py), the backbone mmseg/models/backbones/mae.py
#   (+ beit.py) and mmseg/engine/optimizers/layer_decay_optimizer_constructor.py.
# Same as the source: blocks [3, 5, 7, 11] -> Feature2Pyramid x4/x2/x1/x0.5 (mmseg's own class) -> UPerHead 768 ch +
#   FCN auxiliary head, SyncBN; checkpoint pos-embed resized bicubically 14x14 -> 32x32 at load and trained; cls token
#   kept; zero-initialised relative position bias per block over the 32x32 grid; no final norm; drop path 0.1; AdamW
#   lr 1e-4 betas (0.9, 0.999) wd 0.05, layer decay 0.65 (lr x 0.65^(13 - depth): embeddings 0, block i -> i+1, neck and
#   heads 13); 1500 linear warmup iterations from 1e-6, then poly; 160k iterations; 8 GPUs x 2 = batch 16 (enforced,
#   see below); crop 512; slide inference 512 / stride 341.
# Weight decay as mmseg runs it (decay_rule='beit'): no decay on 1-D tensors and biases only; the constructor's test
#   `name in ('pos_embed', 'cls_token')` sees 'backbone.pos_embed' and never fires, so the position table, the cls token
#   and the relative position bias tables ARE decayed.
#
# Deliberate deviations from the source                     | reason
# ----------------------------------------------------------+-------------------------------------------------------------
# no layer scale (mmseg MAE: init_values=1.0, trainable      | the suite's one ViT has none (pretraining shares it); at 1.0
#   gamma_1 / gamma_2 per block)                             | it starts as the identity, but it is 2 x 768 trainable
#                                                           | scales per block that this backbone lacks
# relative position bias without the 3 cls entries           | our table covers patch-patch pairs; cls-patch, patch-cls and
#   (mmseg: (2*32-1)^2 + 3 rows per block)                   | cls-cls pairs get 0 (mmseg: 3 learned, zero-init scalars)
# AmpOptimWrapper (AMP)                                      | the source's 1.x config keeps the 0.x key fp16=dict(loss_
#                                                           | scale='dynamic'), which mmengine does not read: as run it
#                                                           | trains in fp32; the recipe (and its name, 'amp') is AMP
# the total batch 16 is enforced (SdAERecipeBatchHook)       | other totals only with auto_scale_lr.enable=True (logged)
#
# Pretrained weights: `tools/train.py CFG --pretrained CKPT` or --cfg-options model.backbone.init_cfg.checkpoint=CKPT.
_base_ = ['mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py']
# Our classes (registered under our own names) and the one global installation: safe checkpoint loading
custom_imports = dict(imports=['sdae_suite.backbones', 'sdae_suite.engine', 'sdae_suite.engine.safe_io_setup'],
                      allow_failed_imports=False)

embed_dim = 768
norm_cfg = dict(type='BN', requires_grad=True)  # becomes SyncBN only when a process group exists (sync_bn below)
sync_bn = 'torch'
recipe_batch = 16  # 8 GPUs x 2 images

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
    type='AmpOptimWrapper',  # tools/train.py: fp32 FiniteGradOptimWrapper on CPU-only machines
    constructor='LayerDecayConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=0.65, decay_rule='beit'))
fp16 = None  # mmseg 0.x key in the base file; AMP is the optim wrapper above
auto_scale_lr = dict(enable=False, base_batch_size=recipe_batch)
custom_hooks = [dict(type='SdAERecipeBatchHook', batch_size=recipe_batch)]
default_hooks = dict(checkpoint=dict(type='CrashSafeCheckpointHook'))  # crash-safe rotation
