# MAE on the embedded demo pool: the SdAE demo with the objective switched (pixel targets, norm_pix_loss, no teacher).
_base_ = ['./sdae_vit-tiny-p8_demo.py']
model = dict(objective='mae', norm_pix_loss=True)
