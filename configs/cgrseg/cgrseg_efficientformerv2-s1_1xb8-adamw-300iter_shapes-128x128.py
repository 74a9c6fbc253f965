# Demo: CGRSeg-T trained from scratch on the embedded SyntheticShapes data
# (5 classes, 128x128), a few minutes on 2 CPU cores. Same model as the
# paper's T apart from plain BN, no ImageNet weights, bias tables laid out
# for 128x128 inputs and a shorter, hotter schedule.
_base_ = [
    '../_base_/models/cgrseg_efficientformerv2.py',
    '../_base_/datasets/synthetic_shapes.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_160k_adamw.py',
]
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(128, 128)),
    backbone=dict(resolution=128, norm_cfg=norm_cfg, init_cfg=None),
    decode_head=dict(num_classes=5, norm_cfg=norm_cfg))
optim_wrapper = dict(
    type='NonFiniteSkipOptimWrapper', optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=50),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0,
         end=300),
]
train_cfg = dict(max_iters=300, val_interval=100)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=100, max_keep_ckpts=2, save_best='mIoU'),
    visualization=dict(draw=True, interval=4))
randomness = dict(seed=0)
