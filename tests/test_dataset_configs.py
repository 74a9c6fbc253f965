"""The CGRSeg configs of the three benchmarks and the missing-data error."""
import copy
import functools
import glob
import os
import os.path as osp
import re

import cv2
import numpy as np
import pytest
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS

import cgrseg  # noqa: F401
from cgrseg.datasets import check_data_roots

CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                      'configs', 'cgrseg')
CONFIGS = sorted(
    path for path in glob.glob(osp.join(CONFIG_DIR, '*.py'))
    if not any(word in osp.basename(path) for word in ('shapes', 'demo')))
NUM_CLASSES = {
    'ADE20KDataset': 150,
    'COCOStuffDataset': 171,
    'PascalContextDataset59': 59
}
# One config per dataset for the data checks (T; B and L inherit its data).
DATASET_CONFIGS = [path for path in CONFIGS if '-s1_' in path]
SPLITS = ('train', 'val', 'test')


@functools.lru_cache(maxsize=None)
def _load(path: str) -> Config:
    return Config.fromfile(path)


def load(path: str) -> Config:
    """A fresh copy of the config, parsed once per session."""
    return copy.deepcopy(_load(path))


def name(path: str) -> str:
    return osp.basename(path)[:-3]


def test_every_size_on_every_dataset():
    cfgs = [load(path) for path in CONFIGS]
    found = {(cfg.model.backbone.arch, cfg.train_dataloader.dataset.type)
             for cfg in cfgs}
    assert found == {(arch, dataset) for arch in ('s1', 's2', 'l')
                     for dataset in NUM_CLASSES}


@pytest.mark.parametrize('path', CONFIGS, ids=name)
def test_model_builds_with_the_dataset_classes(path):
    cfg = load(path)
    cfg.model.backbone.init_cfg = None
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    kind = cfg.train_dataloader.dataset.type
    classes = DATASETS.get(kind).METAINFO['classes']
    assert model.decode_head.num_classes == len(classes) == NUM_CLASSES[kind]
    assert cfg.val_dataloader.dataset.type == kind
    assert cfg.test_dataloader.dataset.type == kind


@pytest.mark.parametrize('path', CONFIGS, ids=name)
def test_original_train_augmentation(path):
    cfg = load(path)
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert [t.type for t in pipeline] == [
        'LoadImageFromFile', 'LoadAnnotations', 'RandomResize', 'RandomCrop',
        'RandomFlip', 'PhotoMetricDistortion', 'PackSegInputs'
    ]
    transforms = {t.type: t for t in pipeline}
    assert tuple(transforms['RandomResize'].ratio_range) == (0.5, 2.0)
    assert transforms['RandomCrop'].cat_max_ratio == 0.75
    crop = tuple(transforms['RandomCrop'].crop_size)
    assert crop == tuple(cfg.model.data_preprocessor.size)
    assert crop == tuple(int(s) for s in path[-10:-3].split('x'))
    assert transforms['RandomFlip'].prob == 0.5
    assert cfg.train_dataloader.batch_size == 4


@pytest.mark.parametrize('path', CONFIGS, ids=name)
def test_schedule_is_consistent(path):
    cfg = load(path)
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end) == ('LinearLR', 0, 1500)
    assert (poly.type, poly.begin) == ('PolyLR', 0)
    assert poly.end == cfg.train_cfg.max_iters
    iters = int(re.search(r'-(\d+)k_', path).group(1)) * 1000
    assert cfg.train_cfg.max_iters == iters
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.optimizer.lr == 1.2e-4


def _views(pipeline: list, img_path: str, seg_path: str) -> list:
    """(shape, flipped) of every view a test pipeline makes of one image."""
    results = Compose(pipeline)(
        dict(img_path=img_path, seg_map_path=seg_path, reduce_zero_label=True,
             seg_fields=[]))
    samples = results['data_samples']
    samples = samples if isinstance(samples, list) else [samples]
    return [(s.img_shape, bool(s.get('flip'))) for s in samples]


@pytest.mark.parametrize(
    'dataset, flip, single_scale',
    [('coco-stuff10k', False, (512, 683)),
     ('pascal-context-59', True, (416, 544))])
def test_tta_uses_the_authors_scales(tmp_path, dataset, flip, single_scale):
    """--tta runs the authors' ratios of the test scale (0.x semantics)."""
    path, = (p for p in DATASET_CONFIGS if dataset in p)
    cfg = load(path)
    init_default_scope('mmseg')
    img_path, seg_path = str(tmp_path / 'a.jpg'), str(tmp_path / 'a.png')
    cv2.imwrite(img_path, np.zeros((375, 500, 3), np.uint8))
    cv2.imwrite(seg_path, np.zeros((375, 500), np.uint8))

    single = _views(cfg.test_dataloader.dataset.pipeline, img_path, seg_path)
    assert single == [(single_scale, False)]
    views = _views(cfg.tta_pipeline, img_path, seg_path)
    assert len(views) == 6 * (2 if flip else 1)
    assert (single_scale, False) in views
    assert any(flipped for _, flipped in views) == flip
    assert cfg.tta_model.type == 'SegTTAModel'


def _set_roots(cfg: Config, root: str) -> None:
    for split in SPLITS:
        cfg[f'{split}_dataloader'].dataset.data_root = root


def _prepare(cfg: Config) -> None:
    """Create the folders and split files the config expects."""
    for split in SPLITS:
        dataset = cfg[f'{split}_dataloader'].dataset
        for prefix in dataset.data_prefix.values():
            os.makedirs(osp.join(dataset.data_root, prefix), exist_ok=True)
        if dataset.get('ann_file'):
            ann_file = osp.join(dataset.data_root, dataset.ann_file)
            os.makedirs(osp.dirname(ann_file), exist_ok=True)
            open(ann_file, 'w').close()


@pytest.mark.parametrize('path', DATASET_CONFIGS, ids=name)
def test_missing_data_root_is_one_clear_error(tmp_path, path):
    cfg = load(path)
    root = str(tmp_path / 'nowhere' / 'data')
    _set_roots(cfg, root)
    with pytest.raises(FileNotFoundError) as error:
        check_data_roots(cfg)
    message = str(error.value)
    kind = cfg.train_dataloader.dataset.type
    assert f'{root}  (train, val, test: {kind} data_root)' in message
    assert '2_dataset_prepare.html' in message
    script = {'ADE20KDataset': 'ADEChallengeData2016.zip',
              'COCOStuffDataset': 'dataset_converters/coco_stuff10k.py',
              'PascalContextDataset59': 'dataset_converters/pascal_context.py'}
    assert script[kind] in message
    prefix = cfg.train_dataloader.dataset.data_prefix.img_path
    assert f'    {prefix}  (train' in message
    assert ('--cfg-options train_dataloader.dataset.data_root=/path/to/data '
            'val_dataloader.dataset.data_root=/path/to/data '
            'test_dataloader.dataset.data_root=/path/to/data') in message

    _prepare(cfg)
    check_data_roots(cfg)


def test_missing_subfolder_and_wrapped_datasets(tmp_path):
    """Missing paths below an existing root and inside dataset wrappers are
    all named in the one error, each once."""
    path, = (p for p in DATASET_CONFIGS if 'coco-stuff10k' in p)
    cfg = load(path)
    _set_roots(cfg, str(tmp_path / 'coco'))
    _prepare(cfg)
    inner = cfg.train_dataloader.dataset
    other = dict(copy.deepcopy(inner), data_root=str(tmp_path / 'other'))
    cfg.train_dataloader.dataset = dict(
        type='RepeatDataset', times=2,
        dataset=dict(type='ConcatDataset', datasets=[inner, other]))
    os.rmdir(tmp_path / 'coco' / 'annotations' / 'test2014')

    with pytest.raises(FileNotFoundError) as error:
        check_data_roots(cfg)
    message = str(error.value)
    assert f"{tmp_path / 'other'}  (train: COCOStuffDataset data_root)" \
        in message
    assert (f"{tmp_path / 'coco' / 'annotations' / 'test2014'}  "
            '(val, test: COCOStuffDataset seg_map_path)') in message
    assert ('train_dataloader.dataset.dataset.datasets.1.data_root='
            '/path/to/other') in message
    assert 'datasets.0' not in message

    with pytest.raises(FileNotFoundError) as error:
        check_data_roots(cfg, splits=('train', ))
    assert 'test2014' not in str(error.value)
