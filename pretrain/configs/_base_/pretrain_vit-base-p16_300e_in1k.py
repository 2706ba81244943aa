# Shared settings of the ViT-B/16 pretraining configs: the official SdAE recipe (AbrahamYabo/SdAE main_pretrain.py
# defaults + README command, models_mae.py, models_teacher.py, engine_pretrain.py, util/lr_sched.py). Not a recipe on
# its own: the source and the deviation table of each recipe are in the config that uses it
# (../sdae_vit-base-p16_300e_in1k.py, ../mae_vit-base-p16_300e_in1k.py).
img_size = 224
model = dict(
    type='MaskedPretrainer',
    objective='sdae',
    encoder=dict(img_size=img_size, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                 drop_path_rate=0.25),
    decoder=dict(embed_dim=512, depth=8, num_heads=16, mlp_ratio=4.0),
    mask_ratio=0.75,
    num_folds=3,              # official --shrink_num 147 --ncrop_loss 3: 3 teacher views of 49 masked patches
    teacher_view='folds',     # 'full': the teacher sees the whole image (official shrink_num=None; cos_dim='channels')
    teacher_init='official',  # timm-0.3.2 random teacher, learnable trunc-normal position table moved by the EMA
    cos_dim='tokens',         # official F.cosine_similarity(dim=1) on [B*K, n, D]: per channel, across a fold's tokens
    norm_pix_loss=True,       # objective='mae' only
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
)

train_dataloader = dict(
    batch_size=96,  # per GPU
    num_workers=10,
    persistent_workers=False,  # fresh workers each epoch, seeded from the (resumable) main RNG
    pin_memory=True,
    drop_last=True,  # as official: every iteration has the full batch
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
    type='FiniteGradOptimWrapper',  # stops on a non-finite gradient before the step (sdae_suite/engine)
    constructor='PretrainOptimWrapperConstructor',
    # Constant weight decay 0.04 (the official --weight_decay_end 0.4 is parsed but never used). No decay on biases
    # and 1-D parameters only: cls_token and mask_token ARE decayed (timm 0.3.2 add_weight_decay, empty skip list);
    # the fixed sin-cos pos_embed is not trained at all.
    # fused=True: torch's single-kernel AdamW (CPU and CUDA), the same update as the official for-loop AdamW, ~6-8 %
    # shorter steps on CPU (tools/benchmark_speed.py --optimizers fused foreach).
    optimizer=dict(type='AdamW', lr=blr * 768 / 256, betas=(0.9, 0.95), weight_decay=0.04, fused=True),
    paramwise_cfg=dict(no_decay_names=[]),
    accumulative_counts=1,
    # clip_grad=dict(max_norm=3.0),  # off in the official recipe
)

# Linear warmup from exactly 0 (peak at the end of warmup_epochs), then half-cycle cosine to 0, stepped per iteration:
# official util/lr_sched.py. begin/end/T_max are filled in by tools/pretrain.py from warmup_epochs and
# train_cfg.max_epochs, so --cfg-options train_cfg.max_epochs=N keeps the schedule consistent.
warmup_epochs = 60
# mmengine's EpochBasedTrainLoop that also resumes mid-epoch, from the checkpoint a SIGTERM / SIGUSR1 writes
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=300)
param_scheduler = [
    dict(type='LinearWarmupFromZeroLR', by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=warmup_epochs, end=300, T_max=300 - warmup_epochs,
         convert_to_iter_based=True),
]
