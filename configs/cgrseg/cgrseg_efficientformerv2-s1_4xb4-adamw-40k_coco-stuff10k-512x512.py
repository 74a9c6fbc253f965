# CGRSeg-T: EfficientFormerV2-S1, COCO-Stuff-10k 512x512, 4 GPUs x 4 images,
# 40k iterations.
# From the authors (nizhenliang/CGRSeg): the model and AdamW recipe of their
# ADE20K configs (lr 1.2e-4, wd 0.01, 1500-iteration warm-up, poly decay);
# the data pipeline of their local_configs/_base_/datasets/coco-stuff10k.py
# (= mmseg's: random resize of (2048, 512) by 0.5-2.0, random 512x512 crop
# with cat_max_ratio 0.75, flip 0.5, photometric distortion; test at
# (2048, 512), unpadded); their multi-scale test (ratios 0.5-1.75, no flip)
# as the TTA pipeline, used by `tools/test.py --tta`. The default test is
# single scale: the README does not mark its COCO-Stuff mIoU multi-scale,
# but the authors' dataset base enabled these ratios, so compare both.
# mmseg's standard (the authors published no COCO-Stuff model config): 40k
# iterations, the longest COCO-Stuff-10k schedule mmseg 1.2.2 ships (its
# pspnet/deeplabv3 *_4xb4-{20k,40k}_coco-stuff10k-512x512 configs).
_base_ = [
    '../_base_/models/cgrseg_efficientformerv2.py',
    '../_base_/datasets/coco-stuff10k.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_160k_adamw.py',
]
# The authors' COCO-Stuff test pipeline did not pad (their ADE20K one did).
data_preprocessor = dict(size=_base_.crop_size, test_cfg=None)
model = dict(
    data_preprocessor=data_preprocessor, decode_head=dict(num_classes=171))
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
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], end=40000),
]
train_cfg = dict(max_iters=40000)
