# Demo of sdae_maskrcnn.py (CAE protocol) on data/demo/coco with the demo ViT-Tiny: trains for real in ~2 min on 2 CPUs.
#   tools/dist_train.sh det_configs/sdae_maskrcnn_demo.py 1 --pretrained work_dirs/<pretrain>/backbone.pth
# SOURCE: sdae_maskrcnn.py (CAE's Mask R-CNN 1x, github.com/lxtGH/CAE; its header lists the recipe's own deviations).
# Everything not listed below is inherited from it unchanged (neck and heads as CAE: SyncBN/BN only in the adapter and
# the box head; frozen position table; CAE's weight-decay rule and lr multipliers; 500-iteration warmup is replaced).
#
# Deviations from sdae_maskrcnn.py                          | reason
# ----------------------------------------------------------+-------------------------------------------------------------
# demo ViT: 192-d, 6 blocks, 3 heads, 8 px patches, blocks   | the demo pretraining arch (pretrain/configs/*_demo.py)
#   [1, 2, 3, 5], 160 px grid; adapter rescales 2/1/0.5/0.25 | stride-8 maps -> strides 4-32
# neck / heads 128 ch, fc 256, 128 RoIs, 300/100 proposals   | ~2 min on 2 CPU cores
# data/demo/coco (6 shape classes), 160 px, resize 0.8-1.25  | embedded demo data (tools/make_demo_data.py)
#  80 iterations, warmup 10, step at 64, lr 3e-4, fp32       | demo length; CPU has no AMP
# score_thr 0 (top 20 per image kept)                        | COCO AP defined even for a barely trained model
# no total-batch check (custom_hooks = [])                   | a demo runs on any number of processes
_base_ = ['./sdae_maskrcnn.py', './_base_/demo_coco.py']

model = dict(
    backbone={{_base_.demo_vit}},
    neck=[
        dict(type='mmseg.Feature2Pyramid', embed_dim={{_base_.demo_embed_dim}}, rescales={{_base_.demo_rescales}},
             norm_cfg={{_base_.norm_cfg}}),
        dict(type='FPN', in_channels=[{{_base_.demo_embed_dim}}] * 4, out_channels={{_base_.demo_neck_channels}},
             num_outs=5),
    ],
    rpn_head={{_base_.demo_rpn_head}},
    roi_head={{_base_.demo_roi_head}},
    train_cfg={{_base_.demo_model_train_cfg}},
    test_cfg={{_base_.demo_model_test_cfg}})

train_dataloader = {{_base_.demo_train_dataloader}}
val_dataloader = {{_base_.demo_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.demo_val_evaluator}}
test_evaluator = val_evaluator
train_cfg = {{_base_.demo_train_cfg}}
optim_wrapper = {{_base_.demo_optim_wrapper}}
param_scheduler = {{_base_.demo_param_scheduler}}
default_hooks = {{_base_.demo_default_hooks}}
log_processor = {{_base_.demo_log_processor}}
custom_hooks = {{_base_.demo_custom_hooks}}
