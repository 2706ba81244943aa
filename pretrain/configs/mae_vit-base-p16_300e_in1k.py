# MAE under the SdAE recipe, for A/B comparisons with ./sdae_vit-base-p16_300e_in1k.py: same model code, data,
# optimizer and schedule; only the objective differs (the decoder head predicts per-patch normalised pixels of the
# masked patches, MSE loss, no teacher).
#
# Source: github.com/facebookresearch/mae (commit efb2a80) -- PRETRAIN.md (command: --norm_pix_loss --mask_ratio 0.75
# --epochs 800 --warmup_epochs 40 --blr 1.5e-4 --weight_decay 0.05, batch 64 x 64 GPUs; ViT-B via --model
# mae_vit_base_patch16), main_pretrain.py (data, AdamW (0.9, 0.95), timm add_weight_decay with no skip list: cls_token
# and mask_token decayed, drop_last), models_mae.py (ViT-B/16 encoder, 8 x 512 decoder with 16 heads, init, loss on
# the masked patches), engine_pretrain.py, util/lr_sched.py (warmup from 0, half-cycle cosine, per iteration).
# As in MAE: architecture, masking, norm_pix_loss (torch.var), init, augmentation, optimizer and its parameter groups,
# the shape of the lr schedule, no gradient clipping, drop_last.
#
# Deliberate deviations from MAE's recipe:
# | what                  | MAE (PRETRAIN.md / models_mae.py)| here                             | why                           |
# |-----------------------|----------------------------------|----------------------------------|-------------------------------|
# | epochs                | 800 (1600 in the paper)          | 300                              | the SdAE recipe: A/B at equal |
# | batch                 | 4096 (64 x 64)                   | 768 (8 x 96)                     | cost and hyper-parameters     |
# | blr (lr)              | 1.5e-4 (2.4e-3 at 4096)          | 2.666e-4 (8e-4 at 768)           |                               |
# | weight decay          | 0.05                             | 0.04                             |                               |
# | warmup                | 40 epochs                        | 60 epochs                        |                               |
# | encoder drop path     | none (MAE's encoder blocks have  | 0 -> 0.25 linear over depth      | the SdAE student has it; only |
# |                       | no drop path)                    |                                  | the objective may differ      |
# | mixed precision       | fp16 autocast + GradScaler       | bf16 autocast where the GPU has  | fp16 overflow (NaN) is the    |
# |                       |                                  | it, else fp16 + dynamic scaling  | known failure of MAE runs     |
# | checkpoints           | every 20 epochs + last           | every epoch (3 kept + last)      | exact resume                  |
# | random streams, data  | DistributedSampler, seed 0+rank  | mmengine DefaultSampler, seed 0  | bit-exact resume; the same    |
# | order, masks          |                                  | per rank, workers seeded from    | distributions, not the same   |
# |                       |                                  | the main RNG                     | draws                         |
# | cudnn.benchmark       | True                             | False                            | deterministic kernels; speed  |
# | AdamW implementation  | torch's default (for-each)       | fused=True (one kernel)          | same update to float rounding;|
# |                       |                                  |                                  | 6-8 % shorter steps on CPU    |
#   tools/pretrain.sh pretrain/configs/mae_vit-base-p16_300e_in1k.py 8 --cfg-options train_dataloader.dataset.data_root=/path/to/imagenet/train
_base_ = ['./_base_/default_runtime.py', './_base_/pretrain_vit-base-p16_300e_in1k.py']
model = dict(objective='mae', norm_pix_loss=True)
