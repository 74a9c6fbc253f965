# Demo teacher for distillation (different architecture): mmseg's UPerNet
# with a ResNetV1c-18 backbone, trained from scratch on the embedded
# SyntheticShapes data for 1500 iterations (the CPU stand-in for the
# UPerNet-ConvNeXt teacher of the ADE20K recipe, which needs mmpretrain).
# 1500 iterations, because after 600 it stayed below the CGRSeg-T demo
# student (docs/distillation.md has the measured runs). The UPerHead is narrowed to
# 128 channels (mmseg's 512 would mean 16x the work in its 3x3
# convolutions). Its last checkpoint, work_dirs/<this config's name>/
# iter_1500.pth, is the teacher of configs/distill/
# kd_upernet-r18-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    '../../_base_/datasets/synthetic_shapes.py',
    '../../_base_/default_runtime.py',
    '../../_base_/schedules/schedule_160k_adamw.py',
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
# AdamW as the CGRSeg demo, without CGRSeg's per-parameter multipliers.
optim_wrapper = dict(
    _delete_=True,
    type='NonFiniteSkipOptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=50),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0,
         end=1500),
]
train_cfg = dict(max_iters=1500, val_interval=500)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=500, max_keep_ckpts=2, save_best='mIoU'),
    visualization=dict(draw=True, interval=4))
randomness = dict(seed=0)
