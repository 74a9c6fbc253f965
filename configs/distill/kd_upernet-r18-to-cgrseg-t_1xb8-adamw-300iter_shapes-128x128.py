# Demo distillation (different architecture): UPerNet-R18 teacher ->
# CGRSeg-T student on the embedded SyntheticShapes data, on CPU in minutes;
# the CPU stand-in for kd_upernet-convnext-b-to-cgrseg-t (ADE20K), whose
# ConvNeXt teacher needs mmpretrain. Student, data, schedule and seed are
# those of the CGRSeg-T demo config. Train the teacher first:
#   python tools/train.py configs/distill/teachers/upernet_r18_1xb8-adamw-1500iter_shapes-128x128.py
#   python tools/train.py configs/distill/kd_upernet-r18-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py
_base_ = ('../cgrseg/'
          'cgrseg_efficientformerv2-s1_1xb8-adamw-300iter_shapes-128x128.py')
teacher_name = 'upernet_r18_1xb8-adamw-1500iter_shapes-128x128'
model = dict(
    type='DistillEncoderDecoder',
    teacher=dict(
        config=f'{{ fileDirname }}/teachers/{teacher_name}.py',
        checkpoint=f'work_dirs/{teacher_name}/iter_1500.pth'),
    distill_losses=[
        # UPerNet predicts at stride 4, CGRSeg at stride 8. The student's
        # logits are upsampled to the teacher's stride-4 map, as they are
        # upsampled to predict: squeezing the teacher's logits to stride 8
        # instead drops the target from 77.0 to 69.8 mIoU, no better than
        # the student alone (tools/analysis_tools/teacher_targets.py;
        # docs/distillation.md has the ablation).
        dict(
            type='PixelwiseKLLoss',
            student='decode_head.logits',
            teacher='decode_head.logits',
            temperature=2.0,
            loss_weight=1.0,
            resize_to='teacher'),
        # The last backbone stage (stride 32): 224 -> 512 channels.
        dict(
            type='FeatureMimicLoss',
            student='backbone.out.3',
            teacher='backbone.out.3',
            student_channels=224,
            teacher_channels=512,
            loss_weight=1.0),
    ])
custom_hooks = _base_.custom_hooks + [
    dict(type='DistillLossWeightHook', warmup_iters=50),
]
