# CGRSeg-T on your own folder of images and label maps: copy this file and
# edit the settings marked EDIT (docs/own_data.md has the layout, the
# commands and what each setting means). One GPU x 8 images, 20k iterations
# from the EfficientFormerV2-S1 ImageNet weights; the model, the AdamW recipe
# and the data pipeline are those of the ADE20K config.
_base_ = [
    '../_base_/models/cgrseg_efficientformerv2.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_160k_adamw.py',
]
# EDIT: one name per label value (0, 1, 2, ...) and one [R, G, B] colour
# per class (for the pictures and the ONNX demo). model.decode_head.num_classes
# follows the number of classes.
metainfo = dict(
    classes=('background', 'building', 'road'),
    palette=[[0, 0, 0], [220, 20, 60], [0, 130, 200]])
data_root = 'data/my_dataset'  # EDIT
img_suffix = '.jpg'  # EDIT: the images' file ending
seg_map_suffix = '.png'  # EDIT: the label maps' file ending
# True when the label maps use 0 for "unlabelled" and 1..N for the classes
# (0 is then ignored and label v is class v - 1).
reduce_zero_label = False
crop_size = (512, 512)  # training crops, padded up to this size
# Training images are scaled to fit this (width, height) times 0.5-2.0,
# keeping their aspect ratio; test images to fit it once.
img_scale = (2048, 512)

model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=len(metainfo['classes'])))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=img_scale,
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
dataset_common = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix=img_suffix,
    seg_map_suffix=seg_map_suffix,
    reduce_zero_label=reduce_zero_label)
train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        dataset_common,
        data_prefix=dict(
            img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        dataset_common,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# The authors' AdamW (lr 1.2e-4, weight decay 0.01, 1500-iteration warm-up,
# poly decay) with CGRSeg's per-parameter multipliers (docs/porting.md M2).
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'head': dict(lr_mult=10.),
            'norm': dict(decay_mult=0.)
        }))
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], end=20000),
]
train_cfg = dict(max_iters=20000, val_interval=2000)
default_hooks = dict(
    checkpoint=dict(interval=2000, max_keep_ckpts=2, save_best='mIoU'))
