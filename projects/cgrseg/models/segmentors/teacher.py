"""The frozen teacher of a distillation: its config file resolved, built
without its initialisation, and its checkpoint loaded strictly."""
import copy
import os.path as osp
from typing import Optional

import yaml
from mmengine.config import Config
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope
from mmengine.utils import get_installed_path
from mmseg.models import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import ConfigType

from ..utils.checkpoint import (CheckpointError, is_local_path,
                                load_segmentor_checkpoint)


def config_path(config: str,
                what: str = 'model.teacher.config: teacher config') -> str:
    """The file of a config path or of ``'<package>::<path>'`` (a config
    inside an installed OpenMMLab package, e.g. ``'mmseg::convnext/...'``);
    ``FileNotFoundError`` starting with ``what`` if there is none.

    ``mmengine.hub.get_config`` resolves the same names, but pip-installs a
    package that is missing; building a model must not install anything.
    """
    path = config
    if '::' in config:
        package, relative = config.split('::', 1)
        root = get_installed_path(MODULE2PACKAGE.get(package, package))
        path = osp.join(root, '.mim', 'configs', relative)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{what} {path!r} not found '
            f'(relative paths are relative to the working directory; '
            f"'<package>::<path>' names a config of an installed "
            f'OpenMMLab package).')
    return path


def published_weights(config: str) -> Optional[str]:
    """The checkpoint URL that the package publishes for a
    ``'<package>::<path>'`` config (the ``Weights`` of its entry in the
    ``metafile.yaml`` next to it), or None."""
    if '::' not in config:
        return None
    metafile = osp.join(osp.dirname(config_path(config)), 'metafile.yaml')
    if not osp.isfile(metafile):
        return None
    with open(metafile) as f:
        models = yaml.safe_load(f).get('Models', [])
    name = osp.basename(config)
    return next((model.get('Weights') for model in models
                 if osp.basename(model.get('Config', '')) == name), None)


def build_teacher_model(config: str) -> EncoderDecoder:
    """The teacher model of a config (``model.teacher.config``), with the
    weights it is built with: its ``custom_imports`` are imported, SyncBN
    becomes BN (the teacher only runs in eval mode) and its ``init_cfg``
    (e.g. ImageNet weights) is not used."""
    path = config_path(config)
    try:
        cfg = Config.fromfile(path)
    except ImportError as err:
        imports = Config.fromfile(
            path, import_custom_modules=False).custom_imports
        raise ImportError(
            f'model.teacher.config {config!r} needs its custom_imports '
            f'{imports.get("imports")!r}, which do not import here: '
            f'{err.__cause__ or err}') from err
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmseg')):
        model = MODELS.build(copy.deepcopy(cfg.model))
    if not isinstance(model, EncoderDecoder):
        raise TypeError(f'model.teacher.config {config!r} builds a '
                        f'{type(model).__name__}; the teacher must be an '
                        f'EncoderDecoder.')
    return revert_sync_batchnorm(model)


def build_teacher(teacher: ConfigType) -> EncoderDecoder:
    """The frozen teacher of ``dict(config=PATH, checkpoint=PATH_OR_URL)``:
    the
    model of :func:`build_teacher_model` with the checkpoint loaded
    strictly, in ``eval()`` mode and with ``requires_grad=False``."""
    teacher = dict(teacher)
    config = teacher.pop('config', None)
    checkpoint = teacher.pop('checkpoint', None)
    if teacher:
        raise ValueError(f'model.teacher: unknown keys {sorted(teacher)}; '
                         f'expected dict(config=..., checkpoint=...).')
    if not config:
        raise ValueError('model.teacher.config is not set: give the config '
                         'file of the teacher model.')
    if not checkpoint:
        raise ValueError('model.teacher.checkpoint is not set: give the '
                         'checkpoint of the trained teacher.')
    config_path(config)
    # ~ expanded as the local reader expands it.
    if is_local_path(checkpoint) and not osp.isfile(
            osp.expanduser(checkpoint)):
        url = published_weights(config)
        if url:
            get = (f'Use the published teacher checkpoint: set '
                   f'model.teacher.checkpoint={url} (downloaded once)')
        else:
            get = f'Train the teacher first (python tools/train.py {config})'
        raise FileNotFoundError(
            f'model.teacher.checkpoint: teacher checkpoint {checkpoint!r} '
            f'not found. {get}, or set model.teacher.checkpoint=PATH (e.g. '
            f'with --cfg-options).')
    model = build_teacher_model(config)
    # load_segmentor_checkpoint rather than mmengine's load_checkpoint: it
    # reads with weights_only=True and says what a misfit file is.
    try:
        load_segmentor_checkpoint(model, checkpoint)
    except CheckpointError as err:
        raise CheckpointError(
            f'model.teacher.checkpoint does not fit model.teacher.config '
            f'{config!r}: {err}') from None
    model.requires_grad_(False)
    return model.eval()
