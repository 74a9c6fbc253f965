# CGRSeg-T: EfficientFormerV2-S1, ADE20K 512x512, 4 GPUs x 4 images, 160k.
_base_ = [
    '../_base_/models/cgrseg_efficientformerv2.py',
    'mmseg::_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_160k_adamw.py',
]
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
