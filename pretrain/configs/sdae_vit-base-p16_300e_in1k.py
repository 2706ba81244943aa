# SdAE, the official recipe: ViT-B/16, 300 epochs on ImageNet-1K, 8 GPUs x 96, AdamW blr 2.666e-4, EMA teacher with
# per-epoch momentum 0.96 -> 0.99, 3-fold masked teacher views, 1 - cosine on standardised teacher features.
#   tools/pretrain.sh pretrain/configs/sdae_vit-base-p16_300e_in1k.py 8 --cfg-options train_dataloader.dataset.data_root=/path/to/imagenet/train
_base_ = ['./_base_/default_runtime.py', './_base_/pretrain_vit-base-p16_300e_in1k.py']
model = dict(objective='sdae')
