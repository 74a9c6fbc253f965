# Pascal Context-59 (59 classes, 480x480 crops): mmseg's dataset config,
# whose training pipeline is the authors' (local_configs/_base_/datasets/
# pascal_context_59.py of nizhenliang/CGRSeg), with the authors' test
# resizing and their multi-scale + flip test as the TTA pipeline
# (`tools/test.py --tta`).
_base_ = 'mmseg::_base_/datasets/pascal_context_59.py'
img_scale = (520, 520)
# The authors resized test images to a multiple of 32 (ResizeToMultiple)
# instead of padding them; the single-scale test is their ratio-1.0 view.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
# The authors' MultiScaleFlipAug(img_ratios=[0.5, ..., 1.75], flip=True):
# each ratio scales the test scale (520, 520), not the original image as
# mmseg's `Resize(scale_factor=r)` would; every scale also runs flipped.
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(
                    type='Resize',
                    scale=(int(img_scale[0] * r), int(img_scale[1] * r)),
                    keep_ratio=True) for r in img_ratios
            ],
            [dict(type='ResizeToMultiple', size_divisor=32)],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ])
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
