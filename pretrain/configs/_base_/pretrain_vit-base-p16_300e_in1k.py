# The official SdAE recipe (ViT-B/16, 224 px, ImageNet-1K, 300 epochs, 8 GPUs x 96). See ../../../shared/REFERENCE.md.
img_size = 224
model = dict(
    type='MaskedPretrainer',
    objective='sdae',
    encoder=dict(img_size=img_size, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                 drop_path_rate=0.25),
    decoder=dict(embed_dim=512, depth=8, num_heads=16, mlp_ratio=4.0),
    mask_ratio=0.75,
    num_folds=3,              # 147 masked patches -> 3 teacher views of 49
    teacher_view='folds',     # 'full': the teacher sees the whole image (ablation)
    # Default 'random' because the official code starts the teacher from its own random init (so epoch 0 regresses
    # random features); 'copy' starts it as a copy of the student, useful for short runs.
    teacher_init='random',
    cos_dim='channels',       # per-token cosine; 'tokens' reproduces the official code's F.cosine_similarity(dim=1)
    norm_pix_loss=True,       # objective='mae' only
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
)

train_dataloader = dict(
    batch_size=96,  # per GPU
    num_workers=10,
    persistent_workers=False,  # fresh workers each epoch, seeded from the (resumable) main RNG
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    worker_init_fn=dict(type='seed_pretrain_worker'),
    dataset=dict(type='ImageFolderPretrainDataset', data_root='data/imagenet/train', img_size=img_size,
                 scale=(0.2, 1.0), skip_corrupt=False),
)

# lr = blr * effective batch / 256, effective batch = batch_size * world size * accumulative_counts; tools/pretrain.py
# computes it from the actual run and prints it (2.666e-4 * 768 / 256 = 8e-4 for the official 8 x 96).
blr = 2.666e-4
amp = True  # bf16 autocast where the GPU supports it, fp16 + dynamic loss scaling otherwise; fp32 on CPU
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='PretrainOptimWrapperConstructor',
    # fused=True: torch's single-kernel AdamW (CPU and CUDA), same update as the official for-each/for-loop AdamW, ~6-8 %
    # shorter steps on CPU (tools/benchmark_speed.py --optimizers fused foreach).
    optimizer=dict(type='AdamW', lr=blr * 768 / 256, betas=(0.9, 0.95), weight_decay=0.04, fused=True),
    paramwise_cfg=dict(no_decay_names=['*pos_embed', '*cls_token', '*mask_token']),  # and every bias / norm (1-D)
    accumulative_counts=1,
    # clip_grad=dict(max_norm=3.0),  # off in the official recipe
)

# Linear warmup, then half-cycle cosine to 0, stepped per iteration. begin/end/T_max are filled in by tools/pretrain.py
# from warmup_epochs and train_cfg.max_epochs, so --cfg-options train_cfg.max_epochs=N keeps the schedule consistent.
warmup_epochs = 60
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=300)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=warmup_epochs, end=300, T_max=300 - warmup_epochs,
         convert_to_iter_based=True),
]
