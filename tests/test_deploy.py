"""Deployment: the model traces (torch.export with symbolic sizes,
torch.compile without graph breaks), DeploySegmentor reproduces mmseg's
inference, labels come without full-resolution logits, and the ONNX tools
(export, check, int8, the torch-free demo) work and fail clearly."""
import os.path as osp
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from e2e import DEMO_CONFIG, REPO, documented, python, run
from reference import (label_test_logits, trained_demo_logits,
                       upsample_argmax_all_classes)
from torch.utils._python_dispatch import TorchDispatchMode

from cgrseg.apis import init_segmentor
from cgrseg.deploy import DeploySegmentor, resize_argmax, upsample_argmax
from cgrseg.models.layers.fusion import adaptive_avg_pool2d

EXPORT = 'tools/deployment/pytorch2onnx.py'
ONNX_DEMO = 'demo/onnx_demo.py'
KD_DEMO = str(REPO / 'configs' / 'distill' /
              'kd_cgrseg-l-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py')
# Sizes that are not multiples of 32 (padding inside the graph) nor of 8.
ODD_SIZES = [(128, 128), (100, 76), (65, 131)]


@pytest.fixture(scope='module')
def demo_segmentor(demo_checkpoint):
    return init_segmentor(DEMO_CONFIG, demo_checkpoint)


def images(*size, batch=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *size, generator=gen) * 255


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# --- model code that traces ---------------------------------------------


class Pool(torch.nn.Module):

    def forward(self, x):
        return adaptive_avg_pool2d(x, ((x.shape[-2] - 1) // 4 + 1,
                                       (x.shape[-1] - 1) // 4 + 1))


def export_with_input_x(module: torch.nn.Module, example: torch.Tensor,
                        dims: dict, path: str) -> None:
    """``module`` to ONNX with one input ``x`` whose ``dims`` are free."""
    torch.onnx.export(module, (example, ), path, dynamo=True,
                      input_names=['x'], dynamic_shapes=(dims, ),
                      verbose=False)


@pytest.mark.e2e
def test_adaptive_pool_exports_to_onnx_for_every_size(tmp_path):
    from cgrseg.deploy.onnx_export import onnx_session
    dims = {2: torch.export.Dim('h', min=5), 3: torch.export.Dim('w', min=5)}
    path = str(tmp_path / 'pool.onnx')
    export_with_input_x(Pool(), torch.randn(2, 3, 16, 16), dims, path)
    session = onnx_session(path)
    for h, w in [(16, 16), (17, 23), (9, 40)]:
        x = torch.randn(2, 3, h, w)
        expected = F.adaptive_avg_pool2d(x, ((h - 1) // 4 + 1,
                                             (w - 1) // 4 + 1))
        got = torch.from_numpy(session.run(None, {'x': x.numpy()})[0])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


class LabelStage(torch.nn.Module):
    """Low-resolution logits → labels, upsampled 8x and cropped."""

    def forward(self, logits):
        h, w = logits.shape[-2:]
        return upsample_argmax(logits, 8, (8 * h - 5, 8 * w - 3))


@pytest.mark.e2e
def test_pruned_label_stage_exports_to_onnx_for_every_size(tmp_path):
    """The candidate pruning (data-dependent sizes) in ONNX Runtime: the
    labels of interpolating every class, for sizes other than the traced
    one, with a boundary in every cell and along smooth regions."""
    from cgrseg.deploy.onnx_export import onnx_session
    dims = {0: torch.export.Dim('n', min=1, max=8),
            2: torch.export.Dim('h', min=4, max=512),
            3: torch.export.Dim('w', min=4, max=512)}
    path = str(tmp_path / 'labels.onnx')
    export_with_input_x(LabelStage(), label_test_logits('smooth', 150, 16, 16),
                        dims, path)
    session = onnx_session(path)
    for kind, (h, w) in [('random', (24, 40)), ('smooth', (31, 17)),
                         ('integer', (8, 9))]:
        logits = label_test_logits(kind, 150, h, w)
        expected = upsample_argmax_all_classes(logits, 8,
                                               (8 * h - 5, 8 * w - 3))
        got = session.run(None, {'x': logits.numpy()})[0]
        np.testing.assert_array_equal(got, expected.numpy())


class Network(torch.nn.Module):
    """Backbone and head: (N, 3, H, W) → (N, C, H/8, W/8) logits."""

    def __init__(self, segmentor):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, x):
        return self.segmentor.decode_head(self.segmentor.extract_feat(x))


@pytest.mark.e2e
def test_exported_program_with_symbolic_sizes_matches_eager(demo_segmentor):
    model = Network(demo_segmentor).eval()
    dims = {
        0: torch.export.Dim('batch', max=8),
        2: torch.export.Dim('height', min=65, max=1024),
        3: torch.export.Dim('width', min=65, max=1024)
    }
    with torch.no_grad():
        program = torch.export.export(
            model, (torch.randn(2, 3, 96, 160), ), dynamic_shapes=(dims, ))
        # 128x128 is the bias tables' own size, where eager skips the
        # bias resize that the symbolic graph always runs.
        for size in ODD_SIZES:
            x = torch.randn(1, 3, *size)
            got = program.module()(x)
            expected = model(x)
            assert got.shape == expected.shape
            assert max_rel_err(got, expected) < 1e-5, size


@pytest.mark.e2e
def test_compiles_without_graph_breaks(demo_segmentor):
    model = DeploySegmentor(demo_segmentor)
    x = images(96, 80)
    compiled = torch.compile(
        model, fullgraph=True, dynamic=False, backend='eager')
    with torch.no_grad():
        got, expected = compiled(x), model(x)
    assert max_rel_err(got['logits'], expected['logits']) < 1e-6
    assert torch.equal(got['labels'], expected['labels'])


# --- DeploySegmentor == mmseg's inference --------------------------------


@pytest.mark.parametrize('size', ODD_SIZES[:1] + [
    pytest.param(size, marks=pytest.mark.e2e) for size in ODD_SIZES[1:]])
def test_deploy_segmentor_reproduces_mmseg_predict(demo_segmentor, size):
    from mmseg.structures import SegDataSample
    raw = images(*size, batch=2, seed=1)
    samples = [
        SegDataSample(metainfo=dict(ori_shape=size, img_shape=size))
        for _ in range(2)
    ]
    data = demo_segmentor.data_preprocessor(
        dict(inputs=list(raw), data_samples=samples), False)
    with torch.no_grad():
        predicted = demo_segmentor.predict(data['inputs'],
                                           data['data_samples'])
        out = DeploySegmentor(demo_segmentor)(raw)
    for i, sample in enumerate(predicted):
        torch.testing.assert_close(
            out['logits'][i], sample.seg_logits.data, rtol=1e-5, atol=1e-5)
        assert torch.equal(out['labels'][i], sample.pred_sem_seg.data[0])


# --- labels without full-resolution logits --------------------------------


@pytest.mark.parametrize('chunk', [1, 4, 16, 150])
def test_resize_argmax_equals_full_resize_then_argmax(chunk):
    logits = torch.randn(2, 150, 13, 9, generator=torch.Generator()
                         .manual_seed(chunk))
    full = F.interpolate(
        logits, size=(104, 72), mode='bilinear', align_corners=False)
    expected = full[..., :100, :70].argmax(dim=1)
    got = resize_argmax(logits, (104, 72), (100, 70), chunk)
    assert got.dtype == torch.int64
    assert torch.equal(got, expected)


@pytest.mark.parametrize('factor', [8, 4, 3])
@pytest.mark.parametrize('smooth', [False, True])
def test_upsample_argmax_equals_full_resize_then_argmax(factor, smooth):
    gen = torch.Generator().manual_seed(factor)
    logits = torch.randn(2, 150, 13, 9, generator=gen)
    if smooth:  # regions with boundaries, as a trained model predicts
        logits = F.interpolate(
            3 * torch.randn(2, 150, 3, 3, generator=gen), size=(13, 9),
            mode='bilinear')
    size = (13 * factor, 9 * factor)
    crop_size = (size[0] - 5, size[1] - 2)
    full = F.interpolate(logits, size=size, mode='bilinear')
    expected = full[..., :crop_size[0], :crop_size[1]].argmax(dim=1)
    got = upsample_argmax(logits, factor, crop_size)
    assert got.dtype == torch.int64
    assert torch.equal(got, expected)


@pytest.mark.parametrize('kind, factor', [('random', 8), ('smooth', 8),
                                          ('integer', 8), ('random', 3),
                                          ('smooth', 3), ('trained', 8),
                                          ('trained', 3)])
def test_upsample_argmax_prunes_classes_without_changing_a_label(
        kind, factor):
    """Identical labels to interpolating every class (ADE20K's 150): on
    noise, on smooth fields with boundaries, with exact ties (factor
    8: the weights are multiples of 1/16, so integer logits interpolate
    exactly and a tie is a tie; with factor 3's thirds rounding decides
    exact ties, differently in any two summation orders), and on the
    logits of a model trained on the demo data (its 5 classes)."""
    logits = (trained_demo_logits() if kind == 'trained' else
              label_test_logits(kind, 150, 24, 40))
    h, w = logits.shape[-2:]
    crop_size = (h * factor - 5, w * factor - 2)
    expected = upsample_argmax_all_classes(logits, factor, crop_size)
    assert torch.equal(upsample_argmax(logits, factor, crop_size), expected)


@pytest.mark.parametrize('labels_of', [resize_argmax, upsample_argmax])
def test_labels_keep_the_first_class_on_ties(labels_of):
    logits = torch.zeros(1, 10, 4, 4)
    logits[:, 3] = logits[:, 7] = 1.0
    args = ((8, 8), (8, 8), 4) if labels_of is resize_argmax else (2,
                                                                   (8, 8))
    assert (labels_of(logits, *args) == 3).all()


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operator creates."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.numel = max(self.numel, tensor.numel())
        return out


@pytest.mark.e2e  # full-size (512x512) ADE20K and COCO-Stuff models
@pytest.mark.parametrize('config, classes, path', [
    ('cgrseg_efficientformerv2-s1_4xb4-adamw-160k_ade20k-512x512.py', 150, 8),
    ('cgrseg_efficientformerv2-s1_4xb4-adamw-40k_coco-stuff10k-512x512.py',
     171, None),
])
def test_labels_only_never_holds_full_resolution_logits(config, classes,
                                                        path):
    segmentor = init_segmentor(str(REPO / 'configs' / 'cgrseg' / config))
    size = (256, 200)
    full = classes * size[0] * size[1]
    largest = {}
    for outputs in (('labels', ), ('logits', )):
        model = DeploySegmentor(segmentor, outputs)
        assert model.label_upsampling == path  # cell-wise, else chunked
        with torch.no_grad(), LargestTensor() as probe:
            model(images(*size))
        largest[outputs[0]] = probe.numel
    assert largest['logits'] >= full
    assert largest['labels'] < full / 3


def test_upsample_argmax_memory_is_bounded_when_every_cell_is_mixed():
    logits = torch.randn(1, 150, 32, 24)  # noise: labels change everywhere
    with LargestTensor() as probe:
        upsample_argmax(logits, 8, (256, 192))
    assert probe.numel < 150 * 256 * 192 / 3


def test_deploy_segmentor_rejects_slide_inference(demo_segmentor):
    demo_segmentor.test_cfg.mode = 'slide'
    try:
        with pytest.raises(ValueError, match="test_cfg.mode='whole'"):
            DeploySegmentor(demo_segmentor)
    finally:
        demo_segmentor.test_cfg.mode = 'whole'


def test_distillation_config_gives_its_student(demo_checkpoint):
    # The KD demo's teacher checkpoint does not exist here: building the
    # teacher would fail, so this also shows it is never built.
    student = init_segmentor(KD_DEMO, demo_checkpoint)
    assert type(student).__name__ == 'EncoderDecoder'
    assert student.dataset_meta['classes'][1] == 'disc'


# --- ONNX export tool, ONNX Runtime and the torch-free demo ----------------


@pytest.fixture(scope='module')
def exported(tmp_path_factory, demo_checkpoint, demo_onnx):
    """One dynamic-size file with both outputs (the command of
    docs/deployment.md, conftest's ``demo_onnx``) and one fixed-size
    labels-only file, written by the tool."""
    out = tmp_path_factory.mktemp('onnx')
    files = dict(dynamic=demo_onnx[0], static=str(out / 'static.onnx'))
    logs = dict(
        dynamic=demo_onnx[1],
        static=run(python(EXPORT, DEMO_CONFIG, demo_checkpoint, '--out',
                          files['static'], '--shape', '96', '128',
                          '--output', 'labels')).stdout)
    return files, logs


@pytest.mark.e2e
def test_benchmark_compares_runtimes_in_separate_processes(exported):
    """tools/analysis_tools/benchmark.py: PyTorch, the deploy module, a
    fixed-size file it exports and this session's dynamic-shape file
    (``--onnx-file``: not exported again), each in its own process, two
    interleaved rounds."""
    files, _ = exported
    proc = run(python('tools/analysis_tools/benchmark.py', DEMO_CONFIG,
                      '--backend', 'pytorch', 'deploy', 'onnxruntime',
                      'onnxruntime-dynamic', '--onnx-file',
                      f'onnxruntime-dynamic={files["dynamic"]}', '--output',
                      'labels', '--shape', '96', '96', '--runs', '1',
                      '--warmup', '0', '--threads', '1', '--rounds', '2'))
    rows = re.findall(r'infer fp32 (\S+) labels: median [\d.]+s .* -> '
                      r'[\d.]+ img/s(, [\d.]+x pytorch)?, peak memory',
                      proc.stdout)
    assert [backend for backend, _ in rows] == [
        'pytorch', 'deploy', 'onnxruntime', 'onnxruntime-dynamic'
    ], proc.stdout
    assert [bool(ratio) for _, ratio in rows] == [False, True, True, True]
    # The fixed-size file beside one that takes any size.
    assert re.search(r'onnxruntime labels: ONNX input batchx3x96x96, '
                     r'exported in \d+ s', proc.stdout), proc.stdout
    assert re.search(r'onnxruntime-dynamic labels: ONNX input '
                     r'batchx3x[a-z]\w*x[a-z]\w*, given \(', proc.stdout), \
        proc.stdout
    assert 'rounds=2' in proc.stdout


@pytest.mark.e2e
def test_export_checks_parity_at_several_sizes(exported):
    _, logs = exported
    lines = [line for line in logs['dynamic'].splitlines()
             if 'ONNX Runtime' in line]
    assert len(lines) == 3, logs['dynamic']
    for line in lines:
        assert 'logits_rel_err' in line and 'label_agreement 1' in line
    assert 'label_agreement 1' in logs['static']
    assert 'logits' not in logs['static'].split('outputs:')[1]


@pytest.mark.e2e
def test_onnx_runtime_matches_pytorch_at_any_size(exported, demo_segmentor):
    from cgrseg.deploy.onnx_export import onnx_metadata, onnx_session
    files, _ = exported
    session = onnx_session(files['dynamic'])
    meta = onnx_metadata(session)
    assert meta['input_shape'] == 'dynamic'
    assert meta['outputs'] == ['logits', 'labels']
    assert meta['classes'][:2] == ['background', 'disc']
    assert meta['palette'][1] == [220, 20, 60]
    model = DeploySegmentor(demo_segmentor)
    for size in ODD_SIZES + [(200, 240)]:
        x = images(*size, batch=2, seed=3)
        logits, labels = session.run(None, {'images': x.numpy()})
        with torch.no_grad():
            expected = model(x)
        assert max_rel_err(torch.from_numpy(logits),
                           expected['logits']) < 1e-5, size
        assert (labels == expected['labels'].numpy()).mean() >= 0.9999


@pytest.mark.e2e
def test_fixed_size_file_refuses_other_sizes(exported):
    from cgrseg.deploy.onnx_export import onnx_session
    files, _ = exported
    session = onnx_session(files['static'])
    assert [o.name for o in session.get_outputs()] == ['labels']
    labels = session.run(None, {'images': images(96, 128).numpy()})[0]
    assert labels.shape == (1, 96, 128) and labels.dtype == np.int64
    with pytest.raises(Exception, match='Expected: 96'):
        session.run(None, {'images': images(128, 128).numpy()})


@pytest.mark.e2e
def test_export_rejects_a_checkpoint_of_another_model(demo_checkpoint):
    ade = str(REPO / 'configs' / 'cgrseg' /
              'cgrseg_efficientformerv2-s1_4xb4-adamw-160k_ade20k-'
              '512x512.py')
    proc = run(python(EXPORT, ade, demo_checkpoint, '--out', 'x.onnx'),
               check=False)
    assert proc.returncode == 1
    assert 'does not fit this model' in proc.stderr
    assert 'Traceback' not in proc.stderr


@pytest.mark.e2e
def test_export_without_onnxruntime_names_the_extra(demo_checkpoint,
                                                    tmp_path):
    code = ("import sys, runpy; sys.modules['onnxruntime'] = None; "
            f"sys.argv = ['{EXPORT}'] + sys.argv[1:]; "
            f"runpy.run_path('{EXPORT}', run_name='__main__')")
    proc = run(python('-c', code, DEMO_CONFIG, demo_checkpoint, '--out',
                      str(tmp_path / 'x.onnx')), check=False)
    assert proc.returncode == 1
    assert "pip install -e '.[deploy]'" in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not osp.exists(tmp_path / 'x.onnx')  # failed before exporting


@pytest.mark.e2e
def test_quantize_needs_calibration_images(demo_checkpoint):
    proc = run(python(EXPORT, DEMO_CONFIG, demo_checkpoint, '--out',
                      'x.onnx', '--quantize', 'int8'), check=False)
    assert proc.returncode == 2
    assert '--quantize int8 needs --calib-dir' in proc.stderr


@pytest.mark.e2e
def test_int8_file_agrees_with_fp32_on_most_pixels(exported, tmp_path):
    import cv2

    from cgrseg.deploy.onnx_export import onnx_metadata, onnx_session
    from cgrseg.deploy.quantize import quantize_int8
    files, _ = exported
    rng = np.random.default_rng(0)
    for i in range(4):  # smooth images: a few flat regions
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f'{i}.png'),
                    cv2.resize(small, (128, 96)))
    out = str(tmp_path / 'int8.onnx')
    assert quantize_int8(files['static'], out, str(tmp_path), (96, 128)) == 4
    x = {'images': cv2.imread(str(tmp_path / '0.png')).transpose(
        2, 0, 1)[None].astype(np.float32)}
    fp32 = onnx_session(files['static']).run(None, x)[0]
    session = onnx_session(out)
    int8 = session.run(None, x)[0]
    assert onnx_metadata(session)['classes'][1] == 'disc'  # JSON kept
    assert osp.getsize(out) < osp.getsize(files['static']) / 2
    assert (fp32 == int8).mean() > 0.8


# Blocks the packages a deployment machine does not have: importing any of
# them inside the demo fails.
NO_TORCH = ("import sys, runpy\n"
            "for name in ('torch', 'mmengine', 'mmcv', 'mmseg', 'cgrseg'):\n"
            "    sys.modules[name] = None\n"
            f"sys.argv = ['{ONNX_DEMO}'] + sys.argv[1:]\n"
            f"runpy.run_path('{ONNX_DEMO}', run_name='__main__')\n")


@pytest.mark.e2e
def test_onnx_demo_runs_without_torch_and_draws_the_palette(
        exported, tmp_path):
    import cv2
    files, _ = exported
    image = str(tmp_path / 'in.png')
    cv2.imwrite(image, images(100, 76)[0].permute(1, 2, 0).byte().numpy())
    out = str(tmp_path / 'out.png')
    proc = run(python('-c', NO_TORCH, image, files['dynamic'], '--out-file',
                      out, '--opacity', '1'))
    assert f'{image} -> {out}' in proc.stdout
    painted = cv2.imread(out)
    assert painted.shape == (100, 76, 3)
    palette_bgr = {(0, 0, 0), (60, 20, 220), (200, 130, 0), (0, 190, 255),
                   (75, 180, 60)}
    colours = {tuple(c) for c in painted.reshape(-1, 3).tolist()}
    assert colours <= palette_bgr


@pytest.mark.e2e
def test_onnx_demo_errors(exported, tmp_path):
    files, _ = exported
    proc = run(python(ONNX_DEMO, str(tmp_path / 'missing.png'),
                      files['dynamic']), check=False)
    assert proc.returncode == 1
    assert "cannot read image" in proc.stderr
    proc = run(python(ONNX_DEMO, 'demo/demo.png', files['static']),
               check=False)
    assert proc.returncode == 1
    assert 'exported for 96x128 images, this one is 384x512' in proc.stderr
    assert 'Traceback' not in proc.stderr
    out = str(tmp_path / 'resized.png')
    run(python(ONNX_DEMO, 'demo/demo.png', files['static'], '--resize',
               '--out-file', out))
    assert osp.isfile(out)


@pytest.mark.e2e
def test_readme_onnx_demo_command(exported, tmp_path):
    files, _ = exported
    out = str(tmp_path / 'result.png')
    run(documented('README.md', f'python {ONNX_DEMO}', {
        'IMAGE': 'demo/demo.png', 'model.onnx': files['dynamic'],
        'result.png': out}))
    assert osp.isfile(out)


@pytest.mark.e2e
def test_onnx_miou_scores_the_model_against_label_maps(exported, tmp_path):
    import cv2

    from cgrseg.deploy.onnx_export import onnx_session
    files, _ = exported
    session = onnx_session(files['dynamic'])
    for folder in ('img', 'ann'):
        (tmp_path / folder).mkdir()
    for i in range(2):
        image = images(100, 76, seed=i)[0].permute(1, 2, 0).byte().numpy()
        cv2.imwrite(str(tmp_path / 'img' / f'{i}.png'), image)
        labels = session.run(['labels'], {
            'images': image.transpose(2, 0, 1)[None].astype(np.float32)
        })[0][0]
        if i == 1:  # pixels labelled 255 are ignored, not counted wrong
            labels[labels == labels.max()] = 255
        cv2.imwrite(str(tmp_path / 'ann' / f'{i}.png'),
                    labels.astype(np.uint8))
    proc = run(python('tools/deployment/onnx_miou.py', files['dynamic'],
                      str(tmp_path / 'img'), str(tmp_path / 'ann')))
    assert '2 images, mIoU 100.00, aAcc 100.00' in proc.stdout
