# Demo teacher for distillation (different architecture): mmseg's UPerNet
# with a ResNetV1c-18 backbone, trained from scratch on the embedded
# SyntheticShapes data for 1500 iterations (the CPU stand-in for the
# UPerNet-ConvNeXt teacher of the ADE20K recipe, which needs mmpretrain).
# 1500 iterations, because after 600 it stayed below the CGRSeg-T demo
# student (docs/distillation.md has the measured runs). The UPerHead is
# narrowed to 128 channels (mmseg's 512 would mean 16x the work in its 3x3
# convolutions). Its last checkpoint, work_dirs/<this config's name>/
# iter_1500.pth, is the teacher of configs/distill/
# kd_upernet-r18-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    '../../_base_/datasets/synthetic_shapes.py',
    '../../_base_/default_runtime.py',
    '../../_base_/schedules/schedule_300iter_demo.py',
]
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(128, 128)),
    pretrained=None,
    backbone=dict(depth=18, norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=[64, 128, 256, 512],
        channels=128,
        num_classes=5,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=256, channels=64, num_classes=5, norm_cfg=norm_cfg))
# The demo schedule (without CGRSeg's per-parameter multipliers), at
# lr 1e-3 and five times as long.
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], end=1500),
]
train_cfg = dict(max_iters=1500, val_interval=500)
default_hooks = dict(checkpoint=dict(interval=500))
randomness = dict(seed=0)
