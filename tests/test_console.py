"""What the console shows: optimizer groups summarised, library notices
dropped in the tools, everything else kept; importing cgrseg changes no
warning filter."""
import io
import logging
import warnings

import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor

from cgrseg.engine import GroupSummaryOptimWrapperConstructor
from cgrseg.engine.library_notices import (LIBRARY_NOTICES,
                                           library_warnings_ignored,
                                           quiet_library_notices)
from e2e import DEMO_CONFIG, python, run

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


def test_import_changes_no_warning_filter_and_user_scripts_see_notices():
    """A user's script (here: a config whose custom_imports import cgrseg)
    still gets mmseg's notice about avg_non_ignore (docs/porting.md M1)."""
    script = (
        'import warnings\n'
        # they add filters of their own (torch, numpy, scipy, sympy)
        'import mmengine.runner, mmseg.apis\n'
        'before = list(warnings.filters)\n'
        'import cgrseg\n'
        'assert warnings.filters == before, warnings.filters[:5]\n'
        'from mmengine.config import Config\n'
        'from mmengine.registry import init_default_scope\n'
        'from mmseg.registry import MODELS\n'
        'init_default_scope("mmseg")\n'
        f'MODELS.build(Config.fromfile({DEMO_CONFIG!r}).model)\n')
    proc = run(python('-c', script))
    assert 'Default ``avg_non_ignore`` is False' in proc.stderr


def test_tools_ignore_library_warnings_only_inside_their_main():
    from mmseg.registry import MODELS
    loss = dict(type='mmseg.CrossEntropyLoss')
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with library_warnings_ignored():
            MODELS.build(loss)
            warnings.warn('The loss is NaN')
        inside = [str(w.message) for w in caught]
        MODELS.build(loss)
    assert inside == ['The loss is NaN']
    assert 'avg_non_ignore' in str(caught[-1].message)
    assert warnings.filters == before
