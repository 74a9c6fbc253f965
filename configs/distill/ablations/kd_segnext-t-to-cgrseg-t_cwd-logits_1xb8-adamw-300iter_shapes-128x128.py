# Ablation of kd_segnext-t-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py
# (docs/distillation.md, "Why the UPerNet recipe gained nothing"): channel-
# wise distillation of the logits (CWD, tau 1, weight 3: the ADE20K recipes'
# setting) instead of pixel-wise KL, and no feature mimicking. Everything
# else (student, teacher, schedule, warm-up, seed) is the recipe's.
_base_ = '../kd_segnext-t-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py'
model = dict(distill_losses=[
    dict(
        type='ChannelWiseDistillationLoss',
        student='decode_head.logits',
        teacher='decode_head.logits',
        tau=1.0,
        loss_weight=3.0),
])
