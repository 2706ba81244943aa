# MAE on the embedded demo pool: the SdAE demo (./sdae_vit-tiny-p8_demo.py) with the objective switched -- pixel
# targets with norm_pix_loss, MSE on the masked patches, no teacher.
# Source: ./mae_vit-base-p16_300e_in1k.py (MAE under the SdAE recipe, github.com/facebookresearch/mae); its deviation
# table applies, plus the demo's size deviations (data, 192-d x 6 encoder with 8 px patches on 64 px crops, drop
# path 0, 2 x 128 decoder, batch 64 on one process, blr 1.5e-3, 6 epochs with 1 warmup, fp32, one loader worker), listed
# with their reasons in ./sdae_vit-tiny-p8_demo.py. The teacher settings there do not apply (no teacher).
_base_ = ['./sdae_vit-tiny-p8_demo.py']
model = dict(objective='mae', norm_pix_loss=True)
