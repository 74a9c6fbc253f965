# The CGRSeg AdamW recipe of schedule_160k_adamw.py over 80k iterations:
# the same 1500-iteration warm-up, with the poly decay ending at max_iters.
_base_ = './schedule_160k_adamw.py'
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], end=80000),
]
train_cfg = dict(max_iters=80000)
