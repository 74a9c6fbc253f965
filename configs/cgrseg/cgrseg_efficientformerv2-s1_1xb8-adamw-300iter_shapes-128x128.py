# Demo: CGRSeg-T trained from scratch on the embedded SyntheticShapes data
# (5 classes, 128x128), on CPU in minutes (README.md has a measured run;
# schedule: ../_base_/schedules/schedule_300iter_demo.py). Same model as the
# paper's T apart from plain BN, no ImageNet weights, bias tables laid out
# for 128x128 inputs and a shorter, hotter schedule.
_base_ = [
    '../_base_/models/cgrseg_efficientformerv2.py',
    '../_base_/datasets/synthetic_shapes.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_300iter_demo.py',
]
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(128, 128)),
    backbone=dict(resolution=128, norm_cfg=norm_cfg, init_cfg=None),
    decode_head=dict(num_classes=5, norm_cfg=norm_cfg))
# CGRSeg's per-parameter multipliers (docs/porting.md M2), as in the
# ADE20K config.
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'head': dict(lr_mult=10.),
            'norm': dict(decay_mult=0.)
        }))
randomness = dict(seed=0)
