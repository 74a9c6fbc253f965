# mmseg's runtime plus the project's safety hooks.
_base_ = 'mmseg::_base_/default_runtime.py'
custom_imports = dict(imports=['cgrseg'], allow_failed_imports=False)
custom_hooks = [
    dict(type='DatasetCheckHook'),
    dict(type='BatchCheckHook'),
    dict(type='FiniteCheckpointHook'),
    dict(type='RNGStateHook'),
    # a distillation model's connectors beside the student in checkpoints
    dict(type='DistillStateHook'),
    dict(type='SignalStopHook'),  # SIGTERM: checkpoint, then stop
]
