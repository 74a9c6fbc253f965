"""Stored teacher targets: the replay of a sample's resize/crop/flip/padding
on a stored map, the compact top-k format, the tool that computes them, and
the errors of reading targets that do not fit the run."""
import copy
import json
import os
import os.path as osp
import re
import runpy
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmcv.transforms import RandomFlip, RandomResize
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.registry import DATASETS, MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

from cgrseg.datasets.transforms import RecordedRandomCrop
from cgrseg.models.segmentors.stored_targets import (TARGETS_SUFFIX,
                                                     StoredTargetsError,
                                                     TargetView, decode_topk,
                                                     encode_topk, load_views,
                                                     nearest_view,
                                                     warp_to_sample)
from cgrseg.models.segmentors.teacher import build_teacher_model
from e2e import DEMO_CONFIG, REPO

register_all_modules()


def smooth_map(height: int, width: int, channels: int = 3) -> np.ndarray:
    """A low-frequency (H, W, C) float32 map: bilinear resizing of it by
    cv2 and by grid_sample agree to interpolation tolerance."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([
        np.sin(x / 7 + c) + np.cos(y / 9 - c) + 0.01 * x * (c + 1)
        for c in range(channels)
    ], -1).astype(np.float32)


def augment(full: np.ndarray, transforms: list, seed: int) -> dict:
    """Run mmseg's transforms on ``full`` as if it were the image."""
    np.random.seed(seed)
    results = dict(
        img=full.copy(),
        gt_seg_map=np.zeros(full.shape[:2], np.uint8),
        seg_fields=['gt_seg_map'],
        img_shape=full.shape[:2],
        ori_shape=full.shape[:2])
    for transform in transforms:
        results = transform(results)
    return results


def replay(full: np.ndarray, results: dict, crop: tuple, stride: int = 1):
    """The augmented map padded bottom/right to ``crop`` (as the data
    preprocessor pads), and the stored full map warped with the recorded
    geometry at the same resolution."""
    img = results['img']
    padded = np.zeros((crop[0], crop[1], full.shape[2]), np.float32)
    padded[:img.shape[0], :img.shape[1]] = img
    stored = torch.from_numpy(full).permute(2, 0, 1)
    if stride > 1:  # the teacher's logits: the full map at a coarser grid
        stored = torch.nn.functional.avg_pool2d(stored[None], stride)[0]
    meta = {k: results[k] for k in ('img_shape', 'scale_factor', 'crop_bbox',
                                     'flip', 'flip_direction') if k in results}
    warped, valid = warp_to_sample(stored, (1 / stride, 1 / stride), meta,
                                   crop, crop)
    return torch.from_numpy(padded).permute(2, 0, 1), warped, valid


@pytest.mark.parametrize('direction', ['horizontal', 'vertical', 'diagonal'])
@pytest.mark.parametrize('crop', [(24, 32), (48, 40), (64, 80)])
def test_crop_and_flip_replay_exactly(crop, direction):
    """Crop (inside the image, and larger than it in one or both axes, so
    the preprocessor pads) + flip: the warped stored map is the augmented
    map, exactly, and ``valid`` marks exactly the unpadded pixels."""
    full = np.random.default_rng(0).normal(size=(40, 56, 3)).astype(
        np.float32)
    for seed in range(4):
        results = augment(full, [
            RecordedRandomCrop(crop_size=crop),
            RandomFlip(prob=0.5 + 0.5 * (seed % 2), direction=direction)
        ], seed)
        expected, warped, valid = replay(full, results, crop)
        height, width = results['img'].shape[:2]
        mask = torch.zeros(crop, dtype=torch.bool)
        mask[:height, :width] = True
        assert torch.equal(valid, mask)
        torch.testing.assert_close(warped[:, valid], expected[:, valid],
                                   rtol=0, atol=0)


@pytest.mark.parametrize('crop', [(48, 48), (96, 112)])
def test_resize_crop_flip_replay_to_interpolation_tolerance(crop):
    """RandomResize (down and up) + crop (padding when the resized image is
    smaller) + flip: equal to bilinear interpolation error."""
    full = smooth_map(64, 80)
    for seed in range(6):
        results = augment(full, [
            RandomResize(scale=(80, 64), ratio_range=(0.5, 1.5),
                         keep_ratio=True),
            RecordedRandomCrop(crop_size=crop),
            RandomFlip(prob=0.5),
        ], seed)
        expected, warped, valid = replay(full, results, crop)
        assert valid.any()
        error = (warped[:, valid] - expected[:, valid]).abs()
        # cv2's resize and grid_sample both sample at pixel centres; they
        # differ by the arithmetic of the coordinates and at the border.
        assert error.max() < 0.03, (seed, error.max())


def test_replay_at_the_teachers_stride():
    """A map stored at stride 4 (the teacher's logits) and warped to a
    stride-4 grid equals the augmented full map pooled to stride 4 (up to
    the bilinear sampling of a smooth map), padding excluded."""
    full = smooth_map(64, 96)
    crop = (48, 64)
    for seed in range(4):
        results = augment(full, [
            RecordedRandomCrop(crop_size=crop),
            RandomFlip(prob=0.5)
        ], seed)
        expected, _, _ = replay(full, results, crop)
        stored = torch.nn.functional.avg_pool2d(
            torch.from_numpy(full).permute(2, 0, 1)[None], 4)[0]
        meta = {k: results[k] for k in ('img_shape', 'crop_bbox', 'flip',
                                         'flip_direction')}
        warped, valid = warp_to_sample(stored, (0.25, 0.25), meta,
                                       (12, 16), crop)
        pooled = torch.nn.functional.avg_pool2d(expected[None], 4)[0]
        assert valid.all()
        assert (warped - pooled).abs().max() < 0.05


def test_flipped_view_replays_exactly_when_its_cells_overrun_the_image():
    """A view of the flipped image (width 18 at stride 4: 5 cells, the last
    one running 2 pixels past the edge), flipped back and stored with its
    origin, replays exactly as the teacher's map of a flipped sample (the
    same image flipped, padded to 20). Without the origin it would be off
    by half a cell."""
    flipped_map = torch.randn(3, 4, 5, generator=torch.Generator()
                              .manual_seed(0))
    to_map = (0.25, 0.25)
    origin = (0.0, 5 - 18 * 0.25)
    meta = dict(img_shape=(16, 18), flip=True, flip_direction='horizontal')
    warped, valid = warp_to_sample(flipped_map.flip(-1), to_map, meta,
                                   (4, 5), (16, 20), origin)
    assert valid[:, :4].all() and not valid[:, 4].any()
    torch.testing.assert_close(warped, flipped_map, rtol=0, atol=0)


def test_a_sample_replays_the_nearest_view_flipped_as_it_is():
    nothing = np.zeros(0)
    views = [TargetView(nothing, nothing, nothing, (1., 1.), (0., 0.),
                        (s, s), f)
             for s in (0.75, 1.0, 1.5) for f in (False, True)]

    def chosen(**meta):
        view = nearest_view(views, meta)
        return view.scale[0], view.flip

    assert chosen(scale_factor=(1.3, 1.3), flip=True) == (1.5, True)
    assert chosen(scale_factor=(0.88, 0.88), flip=False) == (1.0, False)
    assert chosen(scale_factor=(0.8, 0.8), flip=True,
                  flip_direction='vertical') == (0.75, False)
    assert chosen() == (1.0, False)
    unflipped = [view for view in views if not view.flip]
    assert nearest_view(unflipped, dict(flip=True)).scale[0] == 1.0


def test_topk_format_keeps_top_classes_and_rest_mass():
    logits = torch.randn(7, 5, 6) * 3
    arrays = encode_topk(logits, 3)
    assert arrays['values'].dtype == np.float16
    assert arrays['indices'].dtype == np.uint8
    dense = decode_topk(*(torch.from_numpy(arrays[k])
                          for k in ('values', 'indices', 'rest')), 7)
    p, q = logits.softmax(0), dense.softmax(0)
    top = logits.topk(3, dim=0).indices
    torch.testing.assert_close(q.gather(0, top), p.gather(0, top),
                               atol=2e-3, rtol=0)
    exact = decode_topk(*(torch.from_numpy(encode_topk(logits, 7)[k])
                          for k in ('values', 'indices', 'rest')), 7)
    torch.testing.assert_close(exact, logits, atol=2e-2, rtol=1e-3)


# -- computed by the tool, read by DistillEncoderDecoder ----------------------

STORED_DEMO = str(REPO / 'configs' / 'distill' /
                  'kd_cgrseg-l-to-cgrseg-t_stored-targets_1xb8-adamw-'
                  '300iter_shapes-128x128.py')


def random_teacher(path, seed: int) -> str:
    torch.manual_seed(seed)
    torch.save({'state_dict': build_teacher_model(DEMO_CONFIG).state_dict()},
               str(path))
    return str(path)


def compute(options: dict, capsys) -> str:
    """Run tools/compute_teacher_targets.py in this process; its stdout."""
    argv = sys.argv
    sys.argv = ['compute_teacher_targets.py', STORED_DEMO, '--batch', '16',
                '--cfg-options'] + [f'{k}={v}' for k, v in options.items()]
    try:
        runpy.run_path(str(REPO / 'tools' / 'compute_teacher_targets.py'),
                       run_name='__main__')
    finally:
        sys.argv = argv
    return capsys.readouterr().out


@pytest.fixture(scope='module')
def stored(tmp_path_factory):
    """A CGRSeg-T teacher (random weights: cheap), its targets over the
    demo training set with all 5 classes kept (top-5), and the options
    that point the stored-targets demo recipe at them."""
    from cgrseg.datasets import generate_shapes
    tmp = tmp_path_factory.mktemp('stored')
    data_root = str(tmp / 'shapes')
    generate_shapes(data_root)
    options = {
        'model.teacher.config': DEMO_CONFIG,
        'model.teacher.checkpoint': random_teacher(tmp / 't.pth', 1),
        'model.teacher.stored_targets.dir': str(tmp / 'targets'),
        'model.teacher.stored_targets.topk': 5,
        # one view per image here (the recipe stores 8; views are tested
        # on 2 images below)
        'model.teacher.stored_targets.scales': (1.0, ),
        'model.teacher.stored_targets.flip': False,
        'train_dataloader.dataset.data_root': data_root,
    }
    return SimpleNamespace(tmp=tmp, data_root=data_root, options=options,
                           targets=str(tmp / 'targets'))


def recipe(options: dict) -> Config:
    cfg = Config.fromfile(STORED_DEMO)
    cfg.merge_from_dict(options)
    return cfg


@pytest.mark.e2e  # runs the tool over the 96 demo images
def test_tool_stores_prints_sizes_and_resumes(stored, capsys):
    out = compute(stored.options, capsys)
    assert '96 to compute' in out
    assert re.search(r'96 images, [\d.]+ MiB in all, [\d.]+ KiB per image '
                     r'\(top-5 of 5 classes, fp16, stride 8, 1 view\(s\)\)',
                     out), out
    with open(osp.join(stored.targets, 'fingerprint.json')) as f:
        info = json.load(f)
    assert len(info['images']) == 96 and info['stride'] == 8
    os.remove(osp.join(stored.targets, info['images'][3] + TARGETS_SUFFIX))
    out = compute(stored.options, capsys)
    assert '1 to compute' in out and '96 images' in out


@pytest.mark.e2e  # two processes over the 96 demo images
def test_ranks_split_the_images_and_store_what_one_process_stores(
        stored, capsys):
    """``torchrun`` with 2 CPU ranks (gloo): each rank takes every second
    image, and together they write the files one process writes."""
    import subprocess
    compute(stored.options, capsys)  # the one-process targets (or resumed)
    out = stored.tmp / 'targets_2_ranks'
    options = dict(stored.options,
                   **{'model.teacher.stored_targets.dir': str(out)})
    port = 29500 + (os.getpid() + 300) % 1000
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         f'--master_port={port}', 'tools/compute_teacher_targets.py',
         STORED_DEMO, '--launcher', 'pytorch', '--device', 'cpu', '--batch',
         '16', '--cfg-options'] + [f'{k}={v}' for k, v in options.items()],
        cwd=str(REPO), capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for rank in (0, 1):
        assert f'[rank {rank}/2] 96 training images, 48 to compute' in \
            proc.stdout, proc.stdout
    assert re.search(r'96 images, [\d.]+ MiB in all', proc.stdout)
    files = sorted(f for f in os.listdir(stored.targets)
                   if f.endswith(TARGETS_SUFFIX))
    assert len(files) == 96
    assert sorted(f for f in os.listdir(out)
                  if f.endswith(TARGETS_SUFFIX)) == files
    for name in files:  # other batches: float rounding, fp16 storage
        (one, ), (two, ) = (load_views(osp.join(d, name))
                            for d in (stored.targets, str(out)))
        torch.testing.assert_close(one.logits(5), two.logits(5), rtol=2e-3,
                                   atol=2e-3, msg=name)
        assert one[3:] == two[3:], name
    with open(osp.join(out, 'fingerprint.json')) as f:
        two_ranks = json.load(f)
    with open(osp.join(stored.targets, 'fingerprint.json')) as f:
        assert json.load(f) == two_ranks


def live_and_stored(stored):
    cfg = recipe(stored.options)
    live = copy.deepcopy(cfg.model)
    live.teacher.pop('stored_targets')
    return cfg, live


@pytest.mark.e2e  # runs the tool over the 96 demo images
def test_stored_targets_give_the_live_teachers_loss(stored, capsys):
    """Without augmentation (the teacher's own view of the image) the
    stored targets' distillation loss is the live teacher's, to fp16."""
    if not osp.isfile(osp.join(stored.targets, 'fingerprint.json')):
        compute(stored.options, capsys)
    cfg, live_cfg = live_and_stored(stored)
    # eval(): the same student (no dropout draws) in both models.
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    torch.manual_seed(0)
    live = MODELS.build(live_cfg).eval()
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    dataset_cfg.data_root = stored.data_root
    dataset_cfg.pipeline = [
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
        dict(type='PackSegInputs')]
    dataset = DATASETS.build(dataset_cfg)
    samples = [dataset[i] for i in (0, 5)]
    data = model.data_preprocessor(
        dict(inputs=[s['inputs'] for s in samples],
             data_samples=[s['data_samples'] for s in samples]), True)
    with torch.no_grad():
        got = model.loss(data['inputs'], data['data_samples'])
        expected = live.loss(data['inputs'], data['data_samples'])
    assert got['distill.loss_kl'] > 0
    torch.testing.assert_close(got['distill.loss_kl'],
                               expected['distill.loss_kl'], rtol=2e-3,
                               atol=1e-6)
    torch.testing.assert_close(got['decode.loss_ce'],
                               expected['decode.loss_ce'])


@pytest.mark.e2e  # the tool over 2 images, 4 views each
def test_views_replay_the_live_teacher_on_flipped_and_resized_images(
        stored, capsys):
    """scales=(1.0, 1.5), flip=True: 4 views per image. A sample flipped at
    scale 1 and one resized by 1.5 (no crop) replay the view the teacher
    computed of exactly that image, so their distillation loss is the live
    teacher's, to fp16."""
    options = dict(stored.options, **{
        'model.teacher.stored_targets.dir': str(stored.tmp / 'views'),
        'model.teacher.stored_targets.scales': (1.0, 1.5),
        'model.teacher.stored_targets.flip': True,
        'train_dataloader.dataset.indices': 2,
    })
    out = compute(options, capsys)
    assert '2 to compute (4 view(s) each: scales [1.0, 1.5], flipped too)' \
        in out, out
    cfg, live_cfg = live_and_stored(SimpleNamespace(options=options))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    torch.manual_seed(0)
    live = MODELS.build(live_cfg).eval()
    img_dir = model._targets.info['img_dir']
    views = load_views(osp.join(stored.tmp, 'views', '0000.png.npy'))
    assert [(v.scale[0], v.flip, v.rest.shape) for v in views
            ] == [(1.0, False, (16, 16)), (1.0, True, (16, 16)),
                  (1.5, False, (24, 24)), (1.5, True, (24, 24))]
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    dataset_cfg.data_root = stored.data_root
    for geometry in (dict(type='RandomFlip', prob=1.0),
                     dict(type='Resize', scale_factor=1.5, keep_ratio=True)):
        dataset_cfg.pipeline = [
            dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            geometry, dict(type='PackSegInputs')]
        sample = DATASETS.build(dataset_cfg)[1]
        assert sample['data_samples'].img_path.startswith(img_dir)
        data = model.data_preprocessor(
            dict(inputs=[sample['inputs']],
                 data_samples=[sample['data_samples']]), True)
        with torch.no_grad():
            got = model.loss(data['inputs'], data['data_samples'])
            expected = live.loss(data['inputs'], data['data_samples'])
        torch.testing.assert_close(got['distill.loss_kl'],
                                   expected['distill.loss_kl'], rtol=2e-3,
                                   atol=1e-6, msg=geometry['type'])


def build_error(cfg: Config) -> str:
    with pytest.raises((StoredTargetsError, ValueError)) as err:
        MODELS.build(cfg.model)
    return str(err.value)


@pytest.mark.e2e  # runs the tool over the 96 demo images
def test_errors_name_the_misfit(stored, capsys):
    if not osp.isfile(osp.join(stored.targets, 'fingerprint.json')):
        compute(stored.options, capsys)
    cfg = recipe(stored.options)
    cfg.model.teacher.checkpoint = random_teacher(stored.tmp / 'u.pth', 2)
    assert 'computed from other teacher weights' in build_error(cfg)
    cfg = recipe(stored.options)
    cfg.model.decode_head.num_classes = 4
    assert 'the teacher predicts 5 classes, the student 4' in \
        build_error(cfg)
    cfg = recipe(stored.options)
    cfg.model.teacher.stored_targets.topk = 3
    assert 'stored with topk=5, the config asks for topk=3' in \
        build_error(cfg)
    cfg = recipe(stored.options)
    cfg.model.teacher.stored_targets.flip = True
    assert ("stored with views {'scales': [1.0], 'flip': False}, the config "
            "asks for {'scales': [1.0], 'flip': True}") in build_error(cfg)
    cfg = recipe(stored.options)
    cfg.model.distill_losses[0].teacher = 'backbone.out.3'
    assert "hold the teacher's logits only" in build_error(cfg)


@pytest.mark.e2e  # runs the tool over the 96 demo images
def test_step_errors_name_the_image(stored, capsys):
    if not osp.isfile(osp.join(stored.targets, 'fingerprint.json')):
        compute(stored.options, capsys)
    model = MODELS.build(recipe(stored.options).model)
    img_dir = model._targets.info['img_dir']

    def step(img_path: str):
        sample = SegDataSample(metainfo=dict(
            img_path=img_path, img_shape=(128, 128), pad_shape=(128, 128),
            ori_shape=(128, 128)))
        sample.gt_sem_seg = PixelData(data=torch.zeros(1, 128, 128).long())
        return model.loss(torch.zeros(1, 3, 128, 128), [sample])

    step(osp.join(img_dir, '0000.png'))
    with pytest.raises(StoredTargetsError, match='another data set'):
        step(osp.join(stored.tmp, 'elsewhere', '0000.png'))
    with pytest.raises(StoredTargetsError,
                       match="has no targets for image '9999.png'"):
        step(osp.join(img_dir, '9999.png'))
    moved = osp.join(stored.targets, '0001.png' + TARGETS_SUFFIX)
    os.rename(moved, moved + '.away')
    try:
        with pytest.raises(StoredTargetsError,
                           match="targets file .* of image '0001.png' is "
                           'missing'):
            step(osp.join(img_dir, '0001.png'))
    finally:
        os.rename(moved + '.away', moved)


STORED_RECIPES = sorted(
    (REPO / 'configs' / 'distill').glob('*_stored-targets_*.py'))


def augmentation(pipeline: list) -> list:
    """A training pipeline without what the stored-target recipes change:
    the crop's type and the packed keys."""
    steps = []
    for step in pipeline:
        step = {k: v for k, v in step.items()
                if k not in ('_scope_', 'meta_keys')}
        if step['type'] == 'RecordedRandomCrop':
            step['type'] = 'RandomCrop'
        steps.append(step)
    return steps


@pytest.mark.parametrize('path', STORED_RECIPES, ids=lambda p: p.name)
def test_stored_recipes_replay_the_live_recipes_augmentation(path):
    cfg = Config.fromfile(str(path))
    live = Config.fromfile(str(path).replace('_stored-targets', ''))
    assert 'stored_targets' not in live.model.teacher
    assert set(cfg.model.teacher.stored_targets) <= {
        'dir', 'topk', 'scales', 'flip'}
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert 'RandomCrop' not in [step['type'] for step in pipeline]
    assert 'crop_bbox' in pipeline[-1]['meta_keys']
    assert augmentation(pipeline) == augmentation(
        live.train_dataloader.dataset.pipeline)
    assert all(loss.teacher == 'decode_head.logits'
               for loss in cfg.model.distill_losses)


def test_logit_losses_leave_out_the_padding():
    """``valid`` (the sample's unpadded top-left part): KL and CWD equal
    the losses on that part alone, whatever the padding holds."""
    from cgrseg.models.losses import (ChannelWiseDistillationLoss,
                                      PixelwiseKLLoss)
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 2, 5, 8, 8, generator=gen)
    valid = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    valid[..., :6, :5] = True
    for loss in (PixelwiseKLLoss(temperature=2.0),
                 ChannelWiseDistillationLoss(tau=1.0)):
        inside = loss(student[..., :6, :5], teacher[..., :6, :5])
        masked = loss(student, torch.where(valid, teacher, teacher * 7 + 3),
                      valid=valid)
        torch.testing.assert_close(masked, inside)
