# The demo schedule of the SyntheticShapes configs: the AdamW of
# schedule_160k_adamw.py, hotter (lr 2e-3) and short (50-iteration warm-up,
# poly decay over 300 iterations); validation and a checkpoint every 100
# iterations, the best by mIoU kept.
_base_ = './schedule_160k_adamw.py'
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=50),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0,
         end=300),
]
train_cfg = dict(max_iters=300, val_interval=100)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=100, max_keep_ckpts=2, save_best='mIoU'),
    visualization=dict(draw=True, interval=4))
