# CGRSeg's optimisation: AdamW, lr 1.2e-4, wd 0.01, poly decay (power 1)
# over all 160k iterations multiplied by a 1500-iteration linear warm-up from
# 1e-6 (both schedulers start at 0; docs/porting.md, Schedule). The model's
# per-parameter multipliers are in the cgrseg configs (paramwise_cfg).
optim_wrapper = dict(
    # A step with a NaN/inf gradient is skipped (training stops after 20 in
    # a row; cgrseg.engine.optim_wrappers); finite steps are OptimWrapper's.
    type='NonFiniteSkipOptimWrapper',
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
    # A kill at any moment leaves a complete checkpoint and last_checkpoint
    # pointing to one: each file is written atomically (backend_args: to
    # <name>.tmp, then renamed; cgrseg.engine.atomic_backend), old ones are
    # deleted after (cgrseg.engine.hooks.CrashSafeCheckpointHook).
    checkpoint=dict(
        type='CrashSafeCheckpointHook', by_epoch=False, interval=16000,
        max_keep_ckpts=3, backend_args=dict(backend='local_atomic')),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
