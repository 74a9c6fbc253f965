# Demo teacher for distillation (different architecture, code in
# mmsegmentation itself): SegNeXt-T (MSCAN-T backbone + LightHamHead, the
# model of mmseg's segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512) trained
# from scratch on the embedded SyntheticShapes data for 900 iterations. The
# CPU-scale counterpart of the SegNeXt-L ADE20K recipe. Its last checkpoint,
# work_dirs/<this config's name>/iter_900.pth, is the teacher of
# configs/distill/kd_segnext-t-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py.
_base_ = [
    '../../_base_/datasets/synthetic_shapes.py',
    '../../_base_/default_runtime.py',
    '../../_base_/schedules/schedule_300iter_demo.py',
]
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(128, 128),
    test_cfg=dict(size_divisor=32))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    # mmseg's MSCAN-T, without its ImageNet weights.
    backbone=dict(
        type='MSCAN',
        embed_dims=[32, 64, 160, 256],
        mlp_ratios=[8, 8, 4, 4],
        drop_rate=0.0,
        drop_path_rate=0.1,
        depths=[3, 3, 5, 2],
        attention_kernel_sizes=[5, [1, 7], [1, 11], [1, 21]],
        attention_kernel_paddings=[2, [0, 3], [0, 5], [0, 10]],
        act_cfg=dict(type='GELU'),
        norm_cfg=dict(type='BN', requires_grad=True)),
    decode_head=dict(
        type='LightHamHead',
        in_channels=[64, 160, 256],
        in_index=[1, 2, 3],
        channels=256,
        ham_channels=256,
        dropout_ratio=0.1,
        num_classes=5,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        ham_kwargs=dict(
            MD_S=1,
            MD_R=16,
            train_steps=6,
            eval_steps=7,
            inv_t=100,
            rand_init=True)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
# The demo schedule at lr 1e-3 with SegNeXt's own per-parameter multipliers
# (head x10, no decay on norms and position blocks), three times as long.
optim_wrapper = dict(
    optimizer=dict(lr=1e-3),
    paramwise_cfg=dict(
        custom_keys={
            'pos_block': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            'head': dict(lr_mult=10.)
        }))
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], end=900),
]
train_cfg = dict(max_iters=900, val_interval=300)
default_hooks = dict(checkpoint=dict(interval=300))
randomness = dict(seed=0)
