# Demo distillation (different architecture, teacher code in mmsegmentation
# itself): SegNeXt-T teacher (MSCAN-T + LightHamHead) -> CGRSeg-T student on
# the embedded SyntheticShapes data, on CPU in minutes; the CPU-scale
# counterpart of kd_segnext-l-to-cgrseg-t (ADE20K). Student, data, schedule
# and seed are those of the CGRSeg-T demo config. Train the teacher first:
#   python tools/train.py configs/distill/teachers/segnext_mscan-t_1xb8-adamw-900iter_shapes-128x128.py
#   python tools/train.py configs/distill/kd_segnext-t-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py
_base_ = ('../cgrseg/'
          'cgrseg_efficientformerv2-s1_1xb8-adamw-300iter_shapes-128x128.py')
teacher_name = 'segnext_mscan-t_1xb8-adamw-900iter_shapes-128x128'
model = dict(
    type='DistillEncoderDecoder',
    teacher=dict(
        config=f'{{ fileDirname }}/teachers/{teacher_name}.py',
        checkpoint=f'work_dirs/{teacher_name}/iter_900.pth'),
    distill_losses=[
        # Class probabilities per pixel (both heads predict at stride 8).
        dict(
            type='PixelwiseKLLoss',
            student='decode_head.logits',
            teacher='decode_head.logits',
            temperature=2.0,
            loss_weight=1.0),
        # The last backbone stage (stride 32): 224 -> 256 channels.
        dict(
            type='FeatureMimicLoss',
            student='backbone.out.3',
            teacher='backbone.out.3',
            student_channels=224,
            teacher_channels=256,
            loss_weight=1.0),
    ])
custom_hooks = _base_.custom_hooks + [
    dict(type='DistillLossWeightHook', warmup_iters=50),
]
