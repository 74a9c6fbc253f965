"""docs/own_data.md followed on a generated folder data set with its own
three classes (not SyntheticShapes'): the config copied and edited as the
guide says, its commands run as written; and each fault of the data or the
config stopped before the first iteration with its one-line message."""
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmengine.config import Config

from cgrseg.datasets import (DatasetError, check_dataset_config,
                             check_dataset_files)
from e2e import REPO, documented, python, run

GUIDE = 'docs/own_data.md'
CONFIG = ('configs/own_data/cgrseg_efficientformerv2-s1_1xb8-adamw-20k_'
          'my-dataset-512x512.py')
NAME = Path(CONFIG).stem
CHECKPOINT = f'work_dirs/{NAME}/iter_20000.pth'  # the guide's, replaced
CLASSES = ('sky', 'forest', 'lake')
PALETTE = [[135, 206, 235], [34, 139, 34], [0, 0, 139]]
COLOURS_BGR = [(235, 206, 135), (34, 139, 34), (139, 0, 0)]
SPLITS = {'train': 4, 'val': 2}
HEIGHT, WIDTH = 72, 96  # the ONNX export's dynamic sizes start at 65


def make_pair(rng: np.random.Generator):
    """A landscape: sky above forest above lake, band edges at random."""
    top, bottom = sorted(rng.integers(10, HEIGHT - 10, 2))
    label = np.full((HEIGHT, WIDTH), 2, np.uint8)
    label[:bottom] = 1
    label[:top] = 0
    image = np.array(COLOURS_BGR, np.float32)[label]
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


@pytest.fixture(scope='module')
def my_dataset(tmp_path_factory) -> Path:
    """The guide's layout: img_dir/{train,val}/*.jpg, ann_dir/.../*.png."""
    root = tmp_path_factory.mktemp('own') / 'my_dataset'
    rng = np.random.default_rng(0)
    for split, count in SPLITS.items():
        (root / 'img_dir' / split).mkdir(parents=True)
        (root / 'ann_dir' / split).mkdir(parents=True)
        for i in range(count):
            image, label = make_pair(rng)
            cv2.imwrite(str(root / 'img_dir' / split / f'{i:04d}.jpg'),
                        image)
            cv2.imwrite(str(root / 'ann_dir' / split / f'{i:04d}.png'),
                        label)
    return root


def edited_config(folder: Path, data_root: Path, palette: list = PALETTE,
                  **settings) -> str:
    """The guide's step 2: a copy of the config in a configs/own_data
    folder beside the project's _base_, with our classes, palette and data
    root (and any other ``setting = value`` replaced)."""
    text = (REPO / CONFIG).read_text()
    settings = dict(
        dict(data_root=repr(str(data_root))), **settings)
    text, count = re.subn(
        r'metainfo = dict\(\n.*?\]\]\)\n',
        f'metainfo = dict(\n    classes={CLASSES!r},\n'
        f'    palette={palette!r})\n', text, flags=re.S)
    assert count == 1, 'the metainfo of the config has changed'
    for key, value in settings.items():
        text, count = re.subn(rf'^{key} = .*$', f'{key} = {value}', text,
                              flags=re.M)
        assert count == 1, key
    configs = folder / 'configs'
    (configs / 'own_data').mkdir(parents=True, exist_ok=True)
    if not (configs / '_base_').exists():
        (configs / '_base_').symlink_to(REPO / 'configs' / '_base_')
    path = configs / 'own_data' / f'{NAME}.py'
    path.write_text(text)
    return str(path)


def short_run(iters: int = 2) -> list:
    """--cfg-options: ``iters`` iterations of 2 images, validation and a
    checkpoint at the end, no ImageNet weights (none on the test machine)."""
    return [
        'model.backbone.init_cfg=None',
        'train_dataloader.batch_size=2',
        'train_dataloader.num_workers=1',
        'val_dataloader.num_workers=1',
        'test_dataloader.num_workers=1',
        f'train_cfg.max_iters={iters}',
        f'train_cfg.val_interval={iters}',
        f'default_hooks.checkpoint.interval={iters}',
        'default_hooks.logger.interval=1',
        f'param_scheduler.1.end={iters}',
    ]


@pytest.mark.e2e
def test_guide_commands_run_as_written(my_dataset, tmp_path):
    config = edited_config(tmp_path, my_dataset)
    work_dir = tmp_path / 'work'
    train = run(documented(GUIDE, 'python tools/train.py', {CONFIG: config})
                + ['--work-dir', str(work_dir), '--cfg-options',
                   *short_run()])
    log = train.stdout + train.stderr
    assert 'read 4 label maps and image headers' in log  # checked first
    assert 'Iter(train) [2/2]' in log
    checkpoint = str(work_dir / 'iter_2.pth')
    assert Path(checkpoint).is_file()

    test = run(documented(GUIDE, 'python tools/test.py', {
        CONFIG: config, CHECKPOINT: checkpoint
    }) + ['--work-dir', str(tmp_path / 'test'), '--cfg-options',
          'test_dataloader.num_workers=1'])
    table = test.stdout + test.stderr
    for name in CLASSES:  # the per-class IoU table
        assert re.search(rf'\|\s+{name}\s+\|', table), name
    assert re.search(r'Iter\(test\).*mIoU: \d', table)

    model = str(tmp_path / 'my_dataset.onnx')
    run(documented(GUIDE, 'python tools/deployment/pytorch2onnx.py', {
        CONFIG: config, CHECKPOINT: checkpoint,
        'work_dirs/my_dataset.onnx': model
    }))
    import onnx
    meta = {p.key: json.loads(p.value)
            for p in onnx.load(model, load_external_data=False
                               ).metadata_props}
    assert meta['classes'] == list(CLASSES)
    assert meta['palette'] == PALETTE

    picture = tmp_path / 'result.png'
    demo = run(documented(GUIDE, 'python demo/onnx_demo.py', {
        'data/my_dataset/img_dir/val/0101.jpg':
        str(my_dataset / 'img_dir' / 'val' / '0001.jpg'),
        'work_dirs/my_dataset.onnx': model,
        'result.png': str(picture)
    }))
    assert cv2.imread(str(picture)).shape == (HEIGHT, WIDTH, 3)
    found = demo.stdout.split('(classes: ')[1].rstrip(')\n').split(', ')
    assert found and set(found) <= set(CLASSES)


@pytest.fixture
def damaged(my_dataset, tmp_path) -> Path:
    """A copy of the data set that a test may damage."""
    root = tmp_path / 'my_dataset'
    shutil.copytree(my_dataset, root)
    return root


def runner_for(config: str, work_dir: Path, *options: str):
    """The Runner tools/train.py builds, in process, without workers."""
    import argparse

    from mmengine.runner import Runner

    from cgrseg.engine.tool_setup import (add_runner_arguments,
                                          load_tool_config)
    parser = argparse.ArgumentParser()
    add_runner_arguments(parser, '')
    args = parser.parse_args(['--cfg-options', *short_run(1), *options])
    cfg = load_tool_config(config, 'none', args.cfg_options, str(work_dir))
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].num_workers = 0
        cfg[f'{split}_dataloader'].persistent_workers = False
    return Runner.from_cfg(cfg)


def file_fault(data_root: Path, folder: Path, split: str) -> str:
    """What DatasetCheckHook reports on the ``split`` dataset of the
    guide's config for ``data_root``: its own call, without building the
    model (test_tools_report_bad_data_in_one_line_before_training runs the
    hook through the tools)."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    cfg = Config.fromfile(edited_config(folder, data_root))
    init_default_scope('mmseg')
    dataset = DATASETS.build(cfg[f'{split}_dataloader'].dataset)
    with pytest.raises(DatasetError) as error:
        check_dataset_files(dataset, f'{split}_dataloader.dataset',
                            len(CLASSES))
    return str(error.value)


def test_missing_label_map(damaged, tmp_path):
    (damaged / 'ann_dir' / 'train' / '0002.png').unlink()
    message = file_fault(damaged, tmp_path, 'train')
    image = damaged / 'img_dir' / 'train' / '0002.jpg'
    expected = damaged / 'ann_dir' / 'train' / '0002.png'
    assert message == (
        f'train_dataloader.dataset: 1 of 4 images have no label map, e.g. '
        f'{image} (expected {expected}). Every image needs a label map of '
        f"its name ending in seg_map_suffix '.png' under "
        f'data_prefix.seg_map_path: add the missing ones or remove their '
        f'images.')


def test_label_maps_of_another_ending_suggest_seg_map_suffix(
        damaged, tmp_path):
    for path in (damaged / 'ann_dir' / 'val').glob('*.png'):
        path.rename(path.with_name(path.stem + '_mask.png'))
    message = file_fault(damaged, tmp_path, 'val')
    assert message.startswith(
        'val_dataloader.dataset: 2 of 2 images have no label map')
    assert message.endswith(
        f"{damaged / 'ann_dir' / 'val'} has 0000_mask.png: if that is its "
        f"label map, set seg_map_suffix='_mask.png'.")


def test_label_map_of_another_size(damaged, tmp_path):
    path = damaged / 'ann_dir' / 'val' / '0001.png'
    cv2.imwrite(str(path), cv2.imread(str(path), 0)[:, :WIDTH // 2])
    message = file_fault(damaged, tmp_path, 'val')
    image = damaged / 'img_dir' / 'val' / '0001.jpg'
    assert message == (
        f'val_dataloader.dataset: 1 of 2 label maps differ in size from '
        f'their images, e.g. {path} is {HEIGHT}x{WIDTH // 2} (HxW) but '
        f'{image} is {HEIGHT}x{WIDTH}: a label map must have its image\'s '
        f'height and width.')


def test_label_values_outside_the_classes(damaged, tmp_path):
    for i in (1, 3):
        path = damaged / 'ann_dir' / 'train' / f'{i:04d}.png'
        label = cv2.imread(str(path), 0)
        label[:5, :5] = 3 * i  # 3 and 9; the data set has 3 classes
        cv2.imwrite(str(path), label)
    message = file_fault(damaged, tmp_path, 'train')
    assert message == (
        f'train_dataloader.dataset: 2 of 4 label maps hold values [3, 9] '
        f'outside the 3 classes of metainfo (0..2; 255 = ignore), e.g. '
        f"{damaged / 'ann_dir' / 'train' / '0001.png'}: [3]. Relabel them "
        f'or add the classes to metainfo (and model.decode_head.num_classes)'
        f', or set reduce_zero_label=True if 0 marks unlabelled pixels and '
        f'1..3 the classes.')


def test_colour_label_maps(damaged, tmp_path):
    path = damaged / 'ann_dir' / 'train' / '0000.png'
    label = cv2.imread(str(path), 0)
    cv2.imwrite(str(path), np.array(PALETTE, np.uint8)[label])
    message = file_fault(damaged, tmp_path, 'train')
    assert message == (
        f'train_dataloader.dataset: 1 of 4 label maps are colour images, '
        f'e.g. {path} (3 channels): a label map holds one class index per '
        f'pixel (a single-channel or palette PNG); convert the colours to '
        f'class indices.')


def test_no_image_with_img_suffix(my_dataset, tmp_path):
    cfg = Config.fromfile(edited_config(tmp_path, my_dataset,
                                        img_suffix="'.png'"))
    with pytest.raises(DatasetError) as error:
        check_dataset_config(cfg)
    folder = my_dataset / 'img_dir' / 'train'
    assert re.fullmatch(
        rf"train_dataloader.dataset finds no image: no file under {folder} "
        r"ends in img_suffix '\.png' \(it holds e\.g\. 000\d\.jpg\): check "
        r'data_prefix\.img_path and img_suffix\.', str(error.value))


def test_image_size_follows_exif_orientation_as_mmcv_loads_it(tmp_path):
    """A JPEG stored 96 wide and 72 high with EXIF orientation 6 (turned
    by 90 degrees) is loaded 72 wide and 96 high, as its label map must
    be; with color_type='unchanged' mmcv does not turn it."""
    import mmcv
    from mmcv.transforms import LoadImageFromFile
    from PIL import Image

    from cgrseg.datasets.file_checks import loaded_image_size
    path = str(tmp_path / 'photo.jpg')
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new('RGB', (96, 72)).save(path, exif=exif.tobytes())
    loader = LoadImageFromFile()
    assert loaded_image_size(path, loader, None) == (96, 72) == \
        mmcv.imread(path).shape[:2]
    unchanged = LoadImageFromFile(color_type='unchanged')
    assert loaded_image_size(path, unchanged, None) == (72, 96) == \
        mmcv.imread(path, flag='unchanged').shape[:2]


def test_num_classes_disagreeing_with_metainfo(my_dataset, tmp_path):
    runner = runner_for(edited_config(tmp_path, my_dataset),
                        tmp_path / 'work', 'model.decode_head.num_classes=4')
    with pytest.raises(DatasetError) as error:
        runner.train()
    assert runner.iter == 0  # before the first iteration
    assert str(error.value) == (
        'BaseSegDataset (train) has 3 classes but '
        'model.decode_head.num_classes is 4: set '
        'model.decode_head.num_classes=3 in the config (and in auxiliary '
        'heads).')


def test_classes_and_palette_of_different_lengths(my_dataset, tmp_path):
    cfg = Config.fromfile(edited_config(tmp_path, my_dataset))
    cfg.val_dataloader.dataset.metainfo.palette = PALETTE[:2]
    with pytest.raises(DatasetError) as error:
        check_dataset_config(cfg)
    assert str(error.value) == (
        'val_dataloader.dataset.metainfo has 3 classes but 2 palette '
        'colours: give one [R, G, B] colour per class, in the order of the '
        'classes (or leave palette out for fixed random colours).')
    cfg.val_dataloader.dataset.metainfo = dict(classes=None)
    with pytest.raises(DatasetError, match=(
            r'^val_dataloader.dataset \(BaseSegDataset\) has no classes')):
        check_dataset_config(cfg)


@pytest.mark.e2e
def test_tools_report_bad_data_in_one_line_before_training(damaged,
                                                            tmp_path):
    """A missing validation label map through tools/train.py (found before
    the first training iteration) and tools/test.py, and a palette of the
    wrong length (found in the config, before anything is built)."""
    import torch

    from cgrseg.apis import init_segmentor
    missing = damaged / 'ann_dir' / 'val' / '0001.png'
    missing.unlink()
    config = edited_config(tmp_path, damaged)
    checkpoint = str(tmp_path / 'random.pth')
    torch.save(dict(state_dict=init_segmentor(config).state_dict()),
               checkpoint)
    bad_palette = edited_config(tmp_path / 'palette', damaged,
                                palette=PALETTE[:2])
    for tool, args, message in (
            ('tools/train.py', [config],
             'val_dataloader.dataset: 1 of 2 images have no label map, '
             f'e.g. {damaged / "img_dir" / "val" / "0001.jpg"} (expected '
             f'{missing}).'),
            ('tools/test.py', [config, checkpoint],
             'test_dataloader.dataset: 1 of 2 images have no label map'),
            ('tools/train.py', [bad_palette],
             'train_dataloader.dataset.metainfo has 3 classes but 2 palette '
             'colours')):
        proc = run(python(tool, *args, '--work-dir', str(tmp_path / 'work'),
                          '--cfg-options', *short_run(1)), check=False)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 1, output[-3000:]
        assert 'Traceback' not in output and 'Iter(' not in output
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f'{tool}: {message}'), last


@pytest.mark.e2e
def test_dataset_check_cost_prints_figures():
    proc = run(python('tools/analysis_tools/dataset_check_cost.py',
                      '--count', '3', '--sizes', '32', '--repeats', '1'))
    assert re.fullmatch(
        r'3 pairs of 32x32: \d+\.\d\d s \(\d+\.\d{3} ms per pair; median '
        r'of 1 runs: \d+\.\d\d\)\n', proc.stdout), proc.stdout


def test_model_without_checkpoint_takes_the_configs_metainfo():
    """An export of the guide's config without a checkpoint still names
    the config's classes (BaseSegDataset's own METAINFO has none)."""
    from cgrseg.apis import init_segmentor
    cfg = Config.fromfile(str(REPO / CONFIG))
    meta = init_segmentor(cfg).dataset_meta
    assert tuple(meta['classes']) == tuple(
        cfg.test_dataloader.dataset.metainfo.classes)
    assert list(map(list, meta['palette'])) == list(
        map(list, cfg.test_dataloader.dataset.metainfo.palette))
