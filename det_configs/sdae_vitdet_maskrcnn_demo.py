# Demo of sdae_vitdet_maskrcnn_100e.py (window attention, simple feature pyramid) on data/demo/coco with the demo
# ViT-Tiny: trains for real in ~2 min on 2 CPUs.
_base_ = ['./sdae_vitdet_maskrcnn_100e.py', './_base_/demo_coco.py']

model = dict(
    data_preprocessor=dict(batch_augments=[dict(type='BatchFixedSizePad', size={{_base_.demo_image_size}},
                                                pad_mask=True)]),
    backbone={{_base_.demo_vitdet}},
    neck=dict(in_channels={{_base_.demo_embed_dim}}, out_channels={{_base_.demo_neck_channels}},
              scale_factors={{_base_.demo_rescales}}),
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
