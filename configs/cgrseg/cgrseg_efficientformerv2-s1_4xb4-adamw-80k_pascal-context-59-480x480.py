# CGRSeg-T: EfficientFormerV2-S1, Pascal Context-59 480x480, 4 GPUs x 4
# images, 80k iterations.
# From the authors (nizhenliang/CGRSeg): the model and AdamW recipe of their
# ADE20K configs (lr 1.2e-4, wd 0.01, 1500-iteration warm-up, poly decay);
# the data pipeline of their local_configs/_base_/datasets/
# pascal_context_59.py (= mmseg's: random resize of (520, 520) by 0.5-2.0,
# random 480x480 crop with cat_max_ratio 0.75, flip 0.5, photometric
# distortion; test at (520, 520) resized to a multiple of 32); their
# multi-scale + flip test (ratios 0.5-1.75) as the TTA pipeline. The
# README's Pascal Context mIoU is that multi-scale result ("MS"): evaluate
# with `tools/test.py --tta`; the default test is single scale.
# mmseg's standard (the authors published no Pascal Context model config):
# 80k iterations, the longest Pascal Context-59 schedule mmseg 1.2.2 ships
# (its fcn/pspnet/deeplabv3/deeplabv3plus/hrnet
# *_4xb4-{40k,80k}_pascal-context-59-480x480 configs). Whole-image
# inference as in the authors' configs, not mmseg's sliding window.
# The backbone keeps resolution=512 (the layout of the checkpoints' attention
# bias tables), which are resized for 480x480 inputs (docs/porting.md Q3).
_base_ = [
    '../_base_/models/cgrseg_efficientformerv2.py',
    '../_base_/datasets/pascal_context_59.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_80k_adamw.py',
]
data_preprocessor = dict(size=_base_.crop_size)
model = dict(
    data_preprocessor=data_preprocessor, decode_head=dict(num_classes=59))
train_dataloader = dict(batch_size=4)
# CGRSeg's per-parameter multipliers, kept as released: 'head' also matches
# the backbone's talking_head1/2, see docs/porting.md M2.
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'head': dict(lr_mult=10.),
            'norm': dict(decay_mult=0.)
        }))
