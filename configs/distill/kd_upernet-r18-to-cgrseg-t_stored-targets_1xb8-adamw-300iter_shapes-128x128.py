# Demo distillation (different architecture) with stored teacher targets:
# the UPerNet-R18 teacher's stride-4 logits are computed once per training
# image and replayed under each sample's resize/crop/flip instead of running
# the teacher at every step (docs/distillation.md, "Stored teacher
# targets"). Otherwise the live recipe (KL at the teacher's stride 4),
# without its feature-mimic loss (stored targets hold logits only).
#   python tools/train.py configs/distill/teachers/upernet_r18_1xb8-adamw-1500iter_shapes-128x128.py
#   python tools/compute_teacher_targets.py configs/distill/kd_upernet-r18-to-cgrseg-t_stored-targets_1xb8-adamw-300iter_shapes-128x128.py
#   python tools/train.py configs/distill/kd_upernet-r18-to-cgrseg-t_stored-targets_1xb8-adamw-300iter_shapes-128x128.py
_base_ = './kd_upernet-r18-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py'
model = dict(
    teacher=dict(
        # 3 of the 5 classes per pixel, fp16, at the teacher's stride 4
        # (32x32 per 128x128 image at scale 1), for the image and its
        # mirror at the 4 scales that span the pipeline's resize ratios.
        stored_targets=dict(
            dir='work_dirs/teacher_targets/'
            'upernet_r18_1xb8-adamw-1500iter_shapes-128x128',
            topk=3,
            scales=(0.75, 1.0, 1.25, 1.5),
            flip=True)),
    distill_losses=[
        dict(
            type='PixelwiseKLLoss',
            student='decode_head.logits',
            teacher='decode_head.logits',
            temperature=2.0,
            loss_weight=1.0,
            resize_to='teacher'),
    ])
# The demo pipeline, with the crop box recorded and packed: the stored map
# is put through each sample's resize, crop and flip (the photometric
# transforms do not apply to it).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(128, 128),
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RecordedRandomCrop', crop_size=(128, 128), cat_max_ratio=0.9),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='PackSegInputs',
        meta_keys=('img_path', 'seg_map_path', 'ori_shape', 'img_shape',
                   'pad_shape', 'scale_factor', 'flip', 'flip_direction',
                   'reduce_zero_label', 'crop_bbox')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
