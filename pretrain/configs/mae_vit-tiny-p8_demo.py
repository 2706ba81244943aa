# MAE on the embedded demo pool: the SdAE demo (./sdae_vit-tiny-p8_demo.py) with the objective switched -- pixel
# targets with norm_pix_loss, MSE on the masked patches, no teacher (its teacher settings do not apply).
# Source: ./mae_vit-base-p16_300e_in1k.py, MAE (github.com/facebookresearch/mae) under the SdAE recipe; its deviation
# table from MAE applies, plus the demo's size deviations:
# | what            | MAE config (ViT-B)                   | here                                   | why                     |
# |-----------------|--------------------------------------|----------------------------------------|-------------------------|
# | data            | ImageNet-1K train, 224 px crops      | demo pool, 64 px crops                 | offline, in minutes     |
# | encoder         | ViT-B/16: 768-d, 12 blocks, 12 heads | 192-d, 6 blocks, 3 heads, 8 px patches | CPU-sized; the same     |
# |                 | (196 patches)                        | (64 patches, 16 visible)               | 0.75 mask               |
# | drop path       | 0.25                                 | 0                                      | tiny model, few steps   |
# | decoder         | 8 blocks x 512, 16 heads             | 2 blocks x 128, 4 heads                | CPU-sized               |
# | batch, lr       | 8 x 96, blr 2.666e-4                 | 1 x 64, blr 1.5e-3                     | small model, few steps  |
# | schedule        | 300 epochs, 60 warmup                | 6 epochs, 1 warmup                     | minutes, not days       |
# | precision       | bf16 / fp16 autocast                 | fp32 (amp off)                         | CPU                     |
# | loader, logging | 10 workers, pinned; log every 50,    | 1 worker, unpinned; log every 10,      | one worker keeps up     |
# |                 | 3 checkpoints kept                   | 1 checkpoint kept                      | (~50 ms/batch), 2 cores |
# The probes during pretraining (ProbeHook every 2 epochs) come with the SdAE demo's custom_hooks, at the same cost
# (3.9-6.9 % of an MAE demo run as measured, see its header; an MAE step is cheaper than an SdAE step, so the share
# is higher than SdAE's 2.7 %).
#   tools/pretrain.sh pretrain/configs/mae_vit-tiny-p8_demo.py 1
_base_ = ['./sdae_vit-tiny-p8_demo.py']
model = dict(objective='mae', norm_pix_loss=True)
