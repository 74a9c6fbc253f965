# Distillation (same family): CGRSeg-L teacher -> CGRSeg-T student on
# ADE20K 512x512, 4 GPUs x 4 images, 160k iterations. The student and its
# schedule are the CGRSeg-T ADE20K config's. The teacher is a trained
# CGRSeg-L (cgrseg_efficientformerv2-l_4xb4-adamw-160k_ade20k-512x512.py)
# whose checkpoint you supply at checkpoint/cgrseg-l_ade20k.pth (or set
# model.teacher.checkpoint=PATH).
_base_ = ('../cgrseg/'
          'cgrseg_efficientformerv2-s1_4xb4-adamw-160k_ade20k-512x512.py')
model = dict(
    type='DistillEncoderDecoder',
    teacher=dict(
        config='{{ fileDirname }}/../cgrseg/'
        'cgrseg_efficientformerv2-l_4xb4-adamw-160k_ade20k-512x512.py',
        checkpoint='checkpoint/cgrseg-l_ade20k.pth'),
    distill_losses=[
        # Channel-wise distillation of the logits (Shu et al., ICCV 2021),
        # with mmrazor's CWD-on-logits setting; both heads at stride 8.
        dict(
            type='ChannelWiseDistillationLoss',
            student='decode_head.logits',
            teacher='decode_head.logits',
            tau=1.0,
            loss_weight=3.0),
        # The last backbone stage (stride 32): 224 -> 384 channels.
        dict(
            type='FeatureMimicLoss',
            student='backbone.out.3',
            teacher='backbone.out.3',
            student_channels=224,
            teacher_channels=384,
            loss_weight=1.0),
    ])
# The distillation losses warm up with the learning rate (1500 iterations).
custom_hooks = _base_.custom_hooks + [
    dict(type='DistillLossWeightHook', warmup_iters=1500),
]
