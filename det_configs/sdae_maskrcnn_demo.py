# Demo of sdae_maskrcnn.py (CAE protocol) on data/demo/coco with the demo ViT-Tiny: trains for real in ~2 min on 2 CPUs.
#   tools/dist_train.sh det_configs/sdae_maskrcnn_demo.py 1 --pretrained work_dirs/<pretrain>/backbone.pth
_base_ = ['./sdae_maskrcnn.py', './_base_/demo_coco.py']

model = dict(
    backbone={{_base_.demo_vit}},
    neck=[
        dict(type='Feature2Pyramid', embed_dim={{_base_.demo_embed_dim}}, rescales={{_base_.demo_rescales}},
             norm_cfg={{_base_.norm_cfg}}),
        dict(type='FPN', in_channels=[{{_base_.demo_embed_dim}}] * 4, out_channels={{_base_.demo_neck_channels}},
             num_outs=5, norm_cfg={{_base_.norm_cfg}}),
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
