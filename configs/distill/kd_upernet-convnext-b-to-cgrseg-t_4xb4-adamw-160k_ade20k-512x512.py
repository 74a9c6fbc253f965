# Distillation (different architecture): UPerNet with a ConvNeXt-B backbone
# (mmseg's convnext-base_upernet_8xb2-amp-160k_ade20k-512x512, 48.7 mIoU
# single-scale in mmseg's model zoo) -> CGRSeg-T on ADE20K 512x512, 4 GPUs
# x 4 images, 160k iterations. The student and its schedule are the
# CGRSeg-T ADE20K config's. The teacher is mmseg's released checkpoint of
# that config (its Weights in mmseg's configs/convnext/metafile.yaml),
# downloaded once.
# The teacher's backbone comes from mmpretrain (its config imports
# mmpretrain.models, which needs torchvision).
_base_ = ('../cgrseg/'
          'cgrseg_efficientformerv2-s1_4xb4-adamw-160k_ade20k-512x512.py')
teacher_weights = 'https://download.openmmlab.com/mmsegmentation/v0.5/convnext/upernet_convnext_base_fp16_512x512_160k_ade20k/upernet_convnext_base_fp16_512x512_160k_ade20k_20220227_181227-02a24fc6.pth'  # noqa: E501
model = dict(
    type='DistillEncoderDecoder',
    teacher=dict(
        config='mmseg::convnext/'
        'convnext-base_upernet_8xb2-amp-160k_ade20k-512x512.py',
        checkpoint=teacher_weights),
    distill_losses=[
        # UPerNet predicts at stride 4, CGRSeg at stride 8: the student's
        # logits are upsampled to the teacher's map, which keeps the
        # teacher's detail (squeezing a UPerNet teacher's logits to stride 8
        # cost the demo's target 7 mIoU and its gain: docs/distillation.md).
        dict(
            type='ChannelWiseDistillationLoss',
            student='decode_head.logits',
            teacher='decode_head.logits',
            tau=1.0,
            loss_weight=3.0,
            resize_to='teacher'),
        # The last backbone stage (stride 32 in both): 224 -> 1024 channels.
        dict(
            type='FeatureMimicLoss',
            student='backbone.out.3',
            teacher='backbone.out.3',
            student_channels=224,
            teacher_channels=1024,
            loss_weight=1.0),
    ])
custom_hooks = _base_.custom_hooks + [
    dict(type='DistillLossWeightHook', warmup_iters=1500),
]
