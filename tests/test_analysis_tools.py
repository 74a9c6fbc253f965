"""The measuring scripts under tools/analysis_tools run and print their
figures (they time nothing here: the shapes are tiny and one run each)."""
import re

import pytest

from e2e import DEMO_CONFIG, REPO, python, run

pytestmark = pytest.mark.e2e  # every test runs a tool in a subprocess

KD_DEMO = str(REPO / 'configs' / 'distill' /
              'kd_cgrseg-l-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py')
KD_UPERNET = str(
    REPO / 'configs' / 'distill' /
    'kd_upernet-r18-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py')


def test_benchmark_prints_rates_and_memory():
    proc = run(python('tools/analysis_tools/benchmark.py', DEMO_CONFIG,
                      '--mode', 'infer', 'train', '--precision', 'fp32',
                      'bf16', '--shape', '64', '64', '--batch', '2',
                      '--runs', '1', '--warmup', '0', '--threads', '1',
                      '--keep-heap'))
    assert "GLIBC_TUNABLES='glibc.malloc.mmap_threshold=" in proc.stdout
    rows = re.findall(r'(infer|train) (fp32|bf16) pytorch(?: logits)?: '
                      r'median [\d.]+s .* -> [\d.]+ (img|iter)/s, peak '
                      r'memory \d+ MiB \(\+\d+ while timed\)',
                      proc.stdout)
    assert [row[:2] for row in rows] == [('infer', 'fp32'),
                                         ('infer', 'bf16'),
                                         ('train', 'fp32'),
                                         ('train', 'bf16')], proc.stdout


def test_benchmark_refuses_a_misnamed_onnx_file(tmp_path):
    """``--onnx-file`` is checked before anything is built or exported."""
    for entry, message in (
            ('tensorrt=x.onnx', "expected BACKEND=PATH with BACKEND one of"),
            ('onnxruntime-dynamic=x.onnx', 'onnxruntime-dynamic is not '
             'among --backend onnxruntime'),
            (f'onnxruntime={tmp_path / "missing.onnx"}', 'no such file')):
        proc = run(python('tools/analysis_tools/benchmark.py', DEMO_CONFIG,
                          '--backend', 'onnxruntime', '--onnx-file', entry),
                   check=False)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr.splitlines()[-1], proc.stderr


def test_benchmark_reports_a_failing_case_instead_of_waiting():
    # Batch 1 at 64x64: the head's 1x1 pooled map cannot be batch-normed
    # in training; the measuring process dies and the tool must say so.
    proc = run(python('tools/analysis_tools/benchmark.py', DEMO_CONFIG,
                      '--mode', 'train', '--shape', '64', '64', '--runs',
                      '1', '--warmup', '0', '--threads', '1'),
               timeout=300, check=False)
    assert proc.returncode != 0
    assert 'Expected more than 1 value per channel' in proc.stderr
    assert 'the measuring process failed (exit code 1)' in proc.stderr


def test_distill_cost_prints_the_ratio(tmp_path):
    proc = run(python('tools/analysis_tools/distill_cost.py', KD_DEMO,
                      '--batch', '2', '--shape', '64', '64', '--runs', '1',
                      '--warmup', '0', '--threads', '1',
                      '--teacher-checkpoint', str(tmp_path / 'none.pth')))
    assert 'a random teacher is used' in proc.stdout
    for case in ('student', 'teacher', 'kd'):
        assert re.search(rf'^{case} +median [\d.]+s .* peak RSS \d+ MiB',
                         proc.stdout, re.M), proc.stdout
    assert re.search(r'^kd / \(student \+ teacher\) = [\d.]+$', proc.stdout,
                     re.M), proc.stdout


def test_distill_cost_measures_the_stored_target_step(tmp_path):
    """With stored targets: the KD step that reads them, the live one and
    the one-time computation (UPerNet-R18: stride-4 targets)."""
    proc = run(python('tools/analysis_tools/distill_cost.py',
                      KD_UPERNET.replace('_1xb8', '_stored-targets_1xb8'),
                      '--batch', '2', '--shape', '64', '64', '--runs', '1',
                      '--warmup', '0', '--threads', '1',
                      '--teacher-checkpoint', str(tmp_path / 'none.pth')))
    for case in ('student', 'teacher', 'kd-live', 'kd'):
        assert re.search(rf'^{case} +median [\d.]+s .* peak RSS \d+ MiB',
                         proc.stdout, re.M), proc.stdout
    assert re.search(r'^kd \(stored targets\) / student = [\d.]+; kd-live '
                     r'/ student = [\d.]+', proc.stdout, re.M), proc.stdout
    assert re.search(r'^one-time target computation: teacher forward '
                     r'[\d.]+s per image at 64x64', proc.stdout,
                     re.M), proc.stdout


def test_teacher_targets_scores_the_resized_teacher_logits(tmp_path):
    """The UPerNet demo recipe's first KL target: teacher logits at
    stride 4 (32x32 for 128x128 images) squeezed to the student's stride 8
    (the recipe itself now matches at stride 4)."""
    import torch
    from mmengine.registry import init_default_scope

    from cgrseg.models.segmentors.teacher import build_teacher_model
    init_default_scope('mmseg')
    torch.manual_seed(0)
    teacher = build_teacher_model(str(
        REPO / 'configs' / 'distill' / 'teachers' /
        'upernet_r18_1xb8-adamw-1500iter_shapes-128x128.py'))
    checkpoint = str(tmp_path / 'teacher.pth')
    torch.save({'state_dict': teacher.state_dict()}, checkpoint)
    proc = run(python('tools/analysis_tools/teacher_targets.py', KD_UPERNET,
                      '--teacher-checkpoint', checkpoint, '--cfg-options',
                      f'val_dataloader.dataset.data_root={tmp_path}/shapes',
                      'model.distill_losses.0.resize_to=student'))
    assert ('24 images; logits: teacher (32, 32), student (16, 16)'
            in proc.stdout), proc.stdout
    assert re.search(r'^teacher at its own size: mIoU [\d.]+$', proc.stdout,
                     re.M), proc.stdout
    assert re.search(
        r"^model.distill_losses\[0\] \(PixelwiseKLLoss, resize_to='student'"
        r'\): target mIoU [\d.]+, mean top-class probability 0\.\d+$',
        proc.stdout, re.M), proc.stdout
