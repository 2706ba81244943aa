# SdAE, the paper-text reading of the loss: the official recipe with one change, the cosine taken per token over the
# 768 channels and averaged over the masked tokens (cos_dim='channels') -- how the paper's text describes the loss
# between predicted and teacher token features. The official multi-fold code instead calls F.cosine_similarity with
# its default dim=1 on [B*3, 49, 768], i.e. per channel across a fold's tokens (cos_dim='tokens', the official config).
# Source: github.com/AbrahamYabo/SdAE (engine_pretrain.py for the loss), through ./sdae_vit-base-p16_300e_in1k.py.
#
# Deviations from the source code: the official config's table, plus
# | what   | official code                                  | here                            | why |
# |--------|------------------------------------------------|---------------------------------|-----|
# | loss   | 1 - cos per (fold, channel) across 49 tokens   | 1 - cos per token across 768 ch | the paper-text reading, for comparison with the code's objective |
#   tools/pretrain.sh pretrain/configs/sdae_vit-base-p16_300e_in1k_paper-cosine.py 8 --cfg-options train_dataloader.dataset.data_root=/path/to/imagenet/train
_base_ = ['./sdae_vit-base-p16_300e_in1k.py']
model = dict(cos_dim='channels')
