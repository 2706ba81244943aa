# Demo of sdae_vitdet_maskrcnn_100e.py (window attention, simple feature pyramid) on data/demo/coco with the demo
# ViT-Tiny: trains for real in ~2 min on 2 CPUs.
# SOURCE: sdae_vitdet_maskrcnn_100e.py (mmdet projects/ViTDet; its header lists the recipe's own deviations). Everything
# not listed below is inherited unchanged (decomposed relative positions, SdAELN2d heads, mmdet ViTDet weight decay).
#
# Deviations from sdae_vitdet_maskrcnn_100e.py              | reason
# ----------------------------------------------------------+-------------------------------------------------------------
# demo ViT: 192-d, 6 blocks, 3 heads, 8 px patches, 160 px;  | the demo pretraining arch (pretrain/configs/*_demo.py);
#   window 10 (2x2 windows on the 20x20 grid), global blocks | a 14-window would not tile a 20x20 grid; rel-pos tables
#   2 and 5, rel_pos_img_size 160                            | sized for the demo grid (39 x 64 global, 19 x 64 windows)
# pyramid rescales 2/1/0.5/0.25 of the stride-8 map, 128 ch  | stride-8 maps -> strides 4-32; ~2 min on 2 CPU cores
# heads 128 ch, fc 256, 128 RoIs, 300/100 proposals          | ~2 min on 2 CPU cores
# data/demo/coco, 160 px resize 0.8-1.25 + crop, no LSJ      | embedded demo data (tools/make_demo_data.py)
#  80 iterations, warmup 10, step at 64, lr 3e-4, wd 0.05,   | demo length and the demo optimiser shared with the CAE demo;
#   layer decay 0.75, fp32                                   | CPU has no AMP
# score_thr 0 (top 20 per image kept)                        | COCO AP defined even for a barely trained model
# no total-batch check (custom_hooks = [])                   | a demo runs on any number of processes
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
custom_hooks = {{_base_.demo_custom_hooks}}
