# CGRSeg's optimisation: AdamW, lr 1.2e-4, wd 0.01, poly decay (power 1)
# over all 160k iterations multiplied by a 1500-iteration linear warm-up from
# 1e-6 (both schedulers start at 0; docs/porting.md, Schedule). The model's
# per-parameter multipliers are in the cgrseg configs (paramwise_cfg).
optim_wrapper = dict(
    type='OptimWrapper',
    # mmengine's default constructor, logging one line per lr/decay group
    # (cgrseg.engine.optim_constructor).
    constructor='GroupSummaryOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=0.00012, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        by_epoch=False,
        begin=0,
        end=160000),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=4000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # backend_args: checkpoints are written atomically (to <name>.tmp, then
    # renamed), see cgrseg.engine.atomic_backend.
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=16000,
        max_keep_ckpts=3, backend_args=dict(backend='local_atomic')),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
