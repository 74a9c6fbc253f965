"""Build a segmentor for inference from a config and a checkpoint (what
``mmseg.apis.init_model`` does, plus distillation configs, package config
paths and a strict load that names the mismatching keys)."""
import copy
from typing import Optional, Union

from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmseg.models import EncoderDecoder
from mmseg.registry import DATASETS, MODELS

from .models.segmentors.distill_encoder_decoder import student_config
from .models.segmentors.teacher import config_path
from .models.utils.checkpoint import load_segmentor_checkpoint


def _dataset_meta(cfg: Config, ckpt: Optional[dict]) -> dict:
    """Class names and palette: the checkpoint's, else the test dataset's
    (its config's ``metainfo``, else its class's ``METAINFO``)."""
    meta = (ckpt or {}).get('meta', {})
    if 'dataset_meta' in meta:
        return dict(meta['dataset_meta'])
    if 'CLASSES' in meta:
        return dict(classes=meta['CLASSES'], palette=meta.get('PALETTE'))
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    if dataset.get('metainfo'):
        return dict(dataset.metainfo)
    dataset_type = dataset.get('type')
    dataset_cls = DATASETS.get(dataset_type) if dataset_type else None
    return dict(getattr(dataset_cls, 'METAINFO', {}))


def init_segmentor(config: Union[str, Config],
                   checkpoint: Optional[str] = None,
                   cfg_options: Optional[dict] = None) -> EncoderDecoder:
    """The config's segmentor on CPU in eval mode, SyncBN as BN, with the
    checkpoint loaded strictly (a mismatch raises ``CheckpointError``
    listing the keys) and ``dataset_meta`` set.

    ``config`` is a file, ``'<package>::<path>'`` (a config of an
    installed OpenMMLab package) or a ``Config``, which is left unchanged.
    A distillation config gives its student, which is what its checkpoints
    hold. The model is built without ``init_weights()`` (no ImageNet
    loading): without a checkpoint the weights are random (for speed or
    export checks only).
    """
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        cfg = Config.fromfile(config_path(config, what='config'))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'teacher' in cfg.model:
        cfg.model = student_config(cfg.model)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    ckpt = None
    if checkpoint is not None:
        ckpt = load_segmentor_checkpoint(model, checkpoint)
    model.dataset_meta = _dataset_meta(cfg, ckpt)
    model.cfg = cfg
    return model.eval()
