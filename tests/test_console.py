"""What the console shows: optimizer groups summarised, library notices
dropped, everything else kept."""
import io
import logging

import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor

from cgrseg.engine import GroupSummaryOptimWrapperConstructor
from cgrseg.engine.library_notices import (LIBRARY_NOTICES,
                                           quiet_library_notices)

OPTIM = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01))
PARAMWISE = dict(custom_keys={'head': dict(lr_mult=10.),
                              'norm': dict(decay_mult=0.)})


def tiny_model() -> nn.Module:
    model = nn.Module()
    model.conv = nn.Conv2d(3, 4, 3)
    model.norm = nn.BatchNorm2d(4)
    model.head = nn.Conv2d(4, 2, 1)
    return model


def logged(name: str, level: str, build) -> str:
    """Everything logged at ``level`` while ``build()`` runs with a fresh
    current MMLogger."""
    logger = MMLogger.get_instance(name, log_level=level)
    stream = io.StringIO()
    logger.handlers[0].stream = stream
    build()
    return stream.getvalue()


def groups(optim_wrapper) -> list:
    return [(g['lr'], g['weight_decay'], [p.shape for p in g['params']])
            for g in optim_wrapper.optimizer.param_groups]


def test_groups_are_mmengines_and_logged_one_line_each():
    model = tiny_model()
    built = {}
    out = logged('console-info', 'INFO', lambda: built.setdefault(
        'wrapper', GroupSummaryOptimWrapperConstructor(OPTIM, PARAMWISE)(
            model)))
    reference = DefaultOptimWrapperConstructor(OPTIM, PARAMWISE)(model)
    assert groups(built['wrapper']) == groups(reference)
    assert 'paramwise_options' not in out
    assert 'lr=0.001 weight_decay=0.01: 2 tensors, 112 parameters' in out
    assert 'lr=0.001 weight_decay=0: 2 tensors, 8 parameters' in out
    assert 'lr=0.01 weight_decay=0.01: 2 tensors, 10 parameters' in out


def test_per_parameter_listing_stays_at_debug():
    out = logged('console-debug', 'DEBUG', lambda:
                 GroupSummaryOptimWrapperConstructor(OPTIM, PARAMWISE)(
                     tiny_model()))
    assert 'DEBUG - paramwise_options -- head.weight:lr=0.01' in out
    assert 'parameter groups' in out


def test_library_notices_are_dropped_and_other_warnings_kept():
    logger = MMLogger.get_instance('console-notices', log_level='INFO')
    stream = io.StringIO()
    logger.handlers[0].stream = stream
    quiet_library_notices(logger)
    for notice in LIBRARY_NOTICES:
        logger.warning(notice + ' (rest of the message)')
    logger.warning('The loss is NaN')
    logger.log(logging.INFO, 'Iter(train) [1/8]')
    out = stream.getvalue()
    assert not any(notice in out for notice in LIBRARY_NOTICES)
    assert 'The loss is NaN' in out and 'Iter(train) [1/8]' in out
