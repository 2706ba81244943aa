# MAE under exactly the SdAE recipe (same model code, data, optimizer and schedule; only the objective differs), for
# A/B comparisons: the decoder head predicts normalised pixels of the masked patches, loss MSE, no teacher.
# (The MAE paper's own recipe differs: blr 1.5e-4, wd 0.05, 40 warmup epochs, batch 4096, 800-1600 epochs.)
_base_ = ['./_base_/default_runtime.py', './_base_/pretrain_vit-base-p16_300e_in1k.py']
model = dict(objective='mae', norm_pix_loss=True)
