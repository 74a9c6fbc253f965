# Distillation (different architecture, default install): SegNeXt-L
# (MSCAN-L + LightHamHead; mmseg's segnext_mscan-l_1xb16-adamw-160k_ade20k-
# 512x512, 50.99 mIoU single-scale in mmseg's model zoo) -> CGRSeg-T on
# ADE20K 512x512, 4 GPUs x 4 images, 160k iterations. The student and its
# schedule are the CGRSeg-T ADE20K config's. The teacher's code ships with
# mmsegmentation; its weights are mmseg's released checkpoint of that
# config (Weights in mmseg's configs/segnext/metafile.yaml), downloaded once:
#   bash tools/dist_train.sh configs/distill/kd_segnext-l-to-cgrseg-t_4xb4-adamw-160k_ade20k-512x512.py 4
_base_ = ('../cgrseg/'
          'cgrseg_efficientformerv2-s1_4xb4-adamw-160k_ade20k-512x512.py')
teacher_weights = 'https://download.openmmlab.com/mmsegmentation/v0.5/segnext/segnext_mscan-l_1x16_512x512_adamw_160k_ade20k/segnext_mscan-l_1x16_512x512_adamw_160k_ade20k_20230209_172055-19b14b63.pth'  # noqa: E501
model = dict(
    type='DistillEncoderDecoder',
    teacher=dict(
        config='mmseg::segnext/'
        'segnext_mscan-l_1xb16-adamw-160k_ade20k-512x512.py',
        checkpoint=teacher_weights),
    distill_losses=[
        # Channel-wise distillation of the logits (Shu et al., ICCV 2021),
        # with mmrazor's CWD-on-logits setting; both heads at stride 8.
        dict(
            type='ChannelWiseDistillationLoss',
            student='decode_head.logits',
            teacher='decode_head.logits',
            tau=1.0,
            loss_weight=3.0),
        # The last backbone stage (stride 32 in both): 224 -> 512 channels.
        dict(
            type='FeatureMimicLoss',
            student='backbone.out.3',
            teacher='backbone.out.3',
            student_channels=224,
            teacher_channels=512,
            loss_weight=1.0),
    ])
# The distillation losses warm up with the learning rate (1500 iterations).
custom_hooks = _base_.custom_hooks + [
    dict(type='DistillLossWeightHook', warmup_iters=1500),
]
