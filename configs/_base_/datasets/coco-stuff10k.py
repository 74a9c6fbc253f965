# COCO-Stuff-10k (171 classes): mmseg's dataset config, whose training
# pipeline and single-scale test are the authors' (local_configs/_base_/
# datasets/coco-stuff10k.py of nizhenliang/CGRSeg), with the authors'
# multi-scale test as the TTA pipeline (`tools/test.py --tta`).
_base_ = 'mmseg::_base_/datasets/coco-stuff10k.py'
img_scale = (2048, 512)
# The authors' MultiScaleFlipAug(img_ratios=[0.5, ..., 1.75], flip=False):
# each ratio scales the test scale (2048, 512), not the original image as
# mmseg's `Resize(scale_factor=r)` would, and no flipped copy is added.
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
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ])
]
