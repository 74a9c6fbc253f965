# Demo teacher for distillation (same family): CGRSeg-L trained from scratch
# on the embedded SyntheticShapes data, twice as long as the CGRSeg-T demo
# (600 iterations; run time in docs/distillation.md). Its last checkpoint,
# work_dirs/<this config's name>/iter_600.pth, is the teacher of
# configs/distill/kd_cgrseg-l-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py.
_base_ = ('../../cgrseg/'
          'cgrseg_efficientformerv2-s1_1xb8-adamw-300iter_shapes-128x128.py')
model = dict(
    backbone=dict(arch='l'),
    # CGRSeg-L's head (cgrseg_efficientformerv2-l_4xb4-adamw-160k_ade20k).
    decode_head=dict(
        in_channels=[80, 192, 384],
        channels=256,
        band_kernel_size=9,
        neck_band_kernel_size=9))
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], end=600),
]
train_cfg = dict(max_iters=600, val_interval=200)
default_hooks = dict(checkpoint=dict(interval=200))
