"""Knowledge distillation: the DistillEncoderDecoder segmentor, its hooks and
recipes, in process (model level and MMEngine Runner on the demo data) and
end to end (tools/test.py on a distillation checkpoint, 2-process DDP).

Teachers are randomly initialised and saved to a temporary checkpoint: the
tests check the mechanics (frozen teacher, checkpoints, DDP), not accuracy.
"""
import glob
import json
import os
import os.path as osp
import re
import sys
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from cgrseg.engine.hooks import DistillLossWeightHook, DistillStateHook
from cgrseg.engine.tool_setup import configure_sync_bn
from cgrseg.models import DistillEncoderDecoder
from cgrseg.models.segmentors.distill_encoder_decoder import student_config
from cgrseg.models.segmentors.distill_state import split_distill_state
from cgrseg.models.segmentors.teacher import (build_teacher,
                                              build_teacher_model,
                                              published_weights)
from cgrseg.models.losses import DistillLayerError
from cgrseg.models.utils.checkpoint import (CheckpointError,
                                            load_segmentor_checkpoint)
from e2e import DEMO_CONFIG, REPO, documented, run, tiny_schedule

DISTILL = REPO / 'configs' / 'distill'
KD_DEMO = str(DISTILL /
              'kd_cgrseg-l-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py')
KD_DEMO_UPERNET = str(
    DISTILL /
    'kd_upernet-r18-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py')
KD_DEMO_SEGNEXT = str(
    DISTILL / 'kd_segnext-t-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py')
KD_ADE = str(DISTILL /
             'kd_cgrseg-l-to-cgrseg-t_4xb4-adamw-160k_ade20k-512x512.py')
KD_ADE_CONVNEXT = str(
    DISTILL /
    'kd_upernet-convnext-b-to-cgrseg-t_4xb4-adamw-160k_ade20k-512x512.py')
KD_ADE_SEGNEXT = str(
    DISTILL / 'kd_segnext-l-to-cgrseg-t_4xb4-adamw-160k_ade20k-512x512.py')
ADE_T = str(REPO / 'configs' / 'cgrseg' /
            'cgrseg_efficientformerv2-s1_4xb4-adamw-160k_ade20k-512x512.py')


@pytest.fixture(autouse=True)
def _one_thread():
    """Two threads on a shared 2-core machine mostly spin-wait."""
    torch.set_num_threads(1)


@pytest.fixture(scope='module', autouse=True)
def _in_repo():
    """The recipes name the teacher configs relative to the repository."""
    init_default_scope('mmseg')
    previous = os.getcwd()
    os.chdir(REPO)
    yield
    os.chdir(previous)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    from cgrseg.datasets import generate_shapes
    root = str(tmp_path_factory.mktemp('data') / 'shapes')
    generate_shapes(root)
    return root


def save_random_teacher(config: str, path: str, seed: int = 0) -> str:
    torch.manual_seed(seed)
    torch.save({'state_dict': build_teacher_model(config).state_dict()},
               path)
    return path


@pytest.fixture(scope='module')
def teachers(tmp_path_factory) -> dict:
    """Random-weight teacher checkpoints for the demo recipes, and a
    CGRSeg-T teacher (the student's own config) for cheap model tests."""
    tmp = tmp_path_factory.mktemp('teachers')
    paths = {}
    for name, recipe in (('cgrseg-l', KD_DEMO),
                         ('upernet-r18', KD_DEMO_UPERNET),
                         ('segnext-t', KD_DEMO_SEGNEXT)):
        config = Config.fromfile(recipe).model.teacher.config
        paths[name] = save_random_teacher(config, str(tmp / f'{name}.pth'))
    paths['cgrseg-t'] = save_random_teacher(DEMO_CONFIG,
                                            str(tmp / 'cgrseg-t.pth'), 1)
    return paths


def kd_cfg(recipe: str, teacher_checkpoint: str) -> Config:
    cfg = Config.fromfile(recipe)
    cfg.model.teacher.checkpoint = teacher_checkpoint
    configure_sync_bn(cfg)
    return cfg


def t_to_t_model(teachers: dict, losses: list) -> DistillEncoderDecoder:
    """CGRSeg-T distilled from a (random) CGRSeg-T: cheap to build."""
    cfg = kd_cfg(KD_DEMO, teachers['cgrseg-t'])
    cfg.model.teacher.config = DEMO_CONFIG
    cfg.model.distill_losses = losses
    return MODELS.build(cfg.model)


def batch(n: int = 2, size: int = 128, seed: int = 0):
    """Preprocessed-style inputs and data samples with labels 0..4."""
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 3, size, size, generator=gen)
    samples = []
    for _ in range(n):
        sample = SegDataSample(metainfo=dict(
            img_shape=(size, size), pad_shape=(size, size),
            ori_shape=(size, size)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, 5, (1, size, size), generator=gen))
        samples.append(sample)
    return inputs, samples


def raw_batch(n: int = 2, size: int = 128) -> dict:
    """A batch as the dataloader gives it (for train_step)."""
    inputs, samples = batch(n, size)
    images = [(x * 40 + 120).clamp(0, 255).to(torch.uint8) for x in inputs]
    return dict(inputs=images, data_samples=samples)


KL_LOGITS = dict(type='PixelwiseKLLoss', student='decode_head.logits',
                 teacher='decode_head.logits')


# -- the teacher is frozen and outside the module tree ------------------

@pytest.fixture(scope='module')
def kd_model(teachers):
    return MODELS.build(kd_cfg(KD_DEMO, teachers['cgrseg-l']).model)


CONNECTORS = ['distill_losses.1.connector.weight',
              'distill_losses.1.connector.bias']


def test_state_dict_is_the_plain_students_then_the_connectors(kd_model):
    plain = MODELS.build(Config.fromfile(DEMO_CONFIG).model)
    assert list(kd_model.state_dict()) == \
        list(plain.state_dict()) + CONNECTORS
    teacher_ids = {id(p) for p in kd_model.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in kd_model.parameters()}
    assert not any(m is kd_model.teacher for m in kd_model.modules())
    assert 'teacher' not in repr(kd_model)
    assert [n for n, _ in kd_model.named_parameters()
            if n.startswith('distill_losses.')] == CONNECTORS


def test_building_the_teacher_leaves_the_random_stream(teachers):
    """Same seed: the same student weights and the same random numbers
    afterwards as the plain student config (KD vs. no-KD runs compare)."""
    torch.manual_seed(0)
    plain = MODELS.build(Config.fromfile(DEMO_CONFIG).model)
    after_plain = torch.rand(4)
    torch.manual_seed(0)
    kd = t_to_t_model(teachers, [
        KL_LOGITS,
        dict(type='FeatureMimicLoss', student='backbone.out.3',
             teacher='backbone.out.3', student_channels=224,
             teacher_channels=224)
    ])
    assert torch.equal(torch.rand(4), after_plain)
    for key, value in plain.state_dict().items():
        assert torch.equal(kd.state_dict()[key], value), key


def test_teacher_stays_in_eval_mode_without_gradients(kd_model):
    teacher = kd_model.teacher
    for mode in (True, False, True):
        kd_model.train(mode)
        assert kd_model.decode_head.training is mode
        assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert sum(p.numel() for p in teacher.parameters()) > 30e6  # CGRSeg-L


def test_teacher_follows_to_and_casts(teachers):
    model = t_to_t_model(teachers, [KL_LOGITS])
    model.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in model.teacher.parameters())
    model.float()
    assert all(p.dtype == torch.float32 for p in model.teacher.parameters())


def test_teacher_not_in_the_optimizer(kd_model):
    cfg = Config.fromfile(KD_DEMO)
    wrapper = build_optim_wrapper(kd_model, cfg.optim_wrapper)
    in_optimizer = {id(p) for group in wrapper.optimizer.param_groups
                    for p in group['params']}
    assert not in_optimizer & {id(p) for p in kd_model.teacher.parameters()}
    assert id(kd_model.distill_losses[1].connector.weight) in in_optimizer
    assert in_optimizer == {id(p) for p in kd_model.parameters()}


def test_train_step_under_cpu_amp(teachers):
    """A real MMEngine train step with bfloat16 autocast: the teacher runs
    under the student's autocast and no_grad, and is unchanged after it."""
    model = t_to_t_model(teachers, [
        KL_LOGITS,
        dict(type='FeatureMimicLoss', student='backbone.out.3',
             teacher='backbone.out.3')
    ])
    model.train()
    teacher_before = {k: v.clone()
                      for k, v in model.teacher.state_dict().items()}
    student_before = model.backbone.patch_embed[0].weight.clone()
    seen = []
    model.teacher.decode_head.conv_seg.register_forward_hook(
        lambda m, i, o: seen.append((o.dtype, torch.is_grad_enabled())))
    wrapper = build_optim_wrapper(
        model, dict(type='CPUAmpOptimWrapper',
                    optimizer=dict(type='AdamW', lr=1e-3)))
    for _ in range(2):
        log_vars = model.train_step(raw_batch(), wrapper)
    assert {'distill.loss_kl', 'distill.loss_mimic'} <= set(log_vars)
    assert seen and set(seen) == {(torch.bfloat16, False)}
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    assert not torch.equal(model.backbone.patch_embed[0].weight,
                           student_before)


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for backward while ``fn`` runs."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_teacher_adds_no_stored_activations(kd_model):
    kd_model.train()
    inputs, samples = batch()
    plain = plain_student_of(kd_model)
    student = saved_bytes(lambda: plain.loss(inputs, samples))
    kd = saved_bytes(lambda: kd_model.loss(inputs, samples))
    with_grad = saved_bytes(lambda: kd_model.teacher.decode_head.forward(
        kd_model.teacher.extract_feat(inputs.requires_grad_(True))))
    # The extra tensors are those of the two losses and the connector
    # (a few logit- and feature-sized maps), not the teacher's graph.
    assert kd - student < 0.05 * student
    assert with_grad > student  # what a teacher with autograd would keep


def plain_student_of(kd_model: DistillEncoderDecoder):
    """A plain EncoderDecoder sharing the KD model's student modules."""
    plain = MODELS.build(Config.fromfile(DEMO_CONFIG).model)
    plain.backbone, plain.decode_head = kd_model.backbone, \
        kd_model.decode_head
    return plain.train()


def test_prediction_is_the_students(kd_model):
    plain = MODELS.build(Config.fromfile(DEMO_CONFIG).model)
    checkpoint = {'state_dict': kd_model.state_dict()}
    split_distill_state(checkpoint)  # as DistillStateHook files it
    plain.load_state_dict(checkpoint['state_dict'])
    kd_model.eval()
    plain.eval()
    inputs, samples = batch(1)
    with torch.no_grad():
        ours = kd_model.predict(inputs, samples)[0].seg_logits.data
        theirs = plain.predict(inputs, samples)[0].seg_logits.data
    assert torch.equal(ours, theirs)


# -- layers ----------------------------------------------------------------

def test_submodule_layers_are_taken_with_forward_hooks(teachers):
    inputs, samples = batch()
    values = []
    for student in ('decode_head.logits', 'decode_head.conv_seg'):
        torch.manual_seed(0)
        model = t_to_t_model(teachers, [dict(KL_LOGITS, student=student)])
        model.eval()  # no dropout
        values.append(model.loss(inputs, samples)['distill.loss_kl'])
    # conv_seg's last call gives the logits.
    assert torch.allclose(values[0], values[1])
    mimic = dict(type='FeatureMimicLoss', student='decode_head.linear_fuse',
                 teacher='decode_head.linear_fuse')
    model = t_to_t_model(teachers, [mimic])
    assert torch.isfinite(model.loss(inputs, samples)['distill.loss_mimic'])


@pytest.mark.parametrize('spec,role,message', [
    ('decode_head', 'student', "no layer 'decode_head'"),
    ('decode_head.nothing', 'student', "no layer 'decode_head.nothing'"),
    ('auxiliary_head.conv', 'teacher', 'must lie under backbone.'),
    ('neck.out.0', 'teacher', 'the teacher has no neck'),
])
def test_bad_layer_is_a_clear_error(teachers, spec, role, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        t_to_t_model(teachers, [dict(KL_LOGITS, **{role: spec})])


def test_missing_output_is_a_clear_error(teachers):
    model = t_to_t_model(teachers, [
        dict(type='FeatureMimicLoss', student='backbone.out.7',
             teacher='backbone.out.3')])
    with pytest.raises(DistillLayerError,
                       match=r"distill_losses\[0\].*no layer "
                       r"'backbone.out.7'.*'backbone.out.3'"):
        model.loss(*batch())


# -- clear errors ----------------------------------------------------------

def test_missing_teacher_checkpoint_names_the_key():
    cfg = Config.fromfile(KD_ADE)  # checkpoint/cgrseg-l_ade20k.pth
    configure_sync_bn(cfg)
    assert not osp.exists(cfg.model.teacher.checkpoint)
    with pytest.raises(FileNotFoundError,
                       match=r'model\.teacher\.checkpoint.*'
                       r'cgrseg-l_ade20k\.pth.*tools/train\.py'):
        MODELS.build(cfg.model)
    cfg.model.teacher.config = 'configs/none.py'
    with pytest.raises(FileNotFoundError, match=r'model\.teacher\.config'):
        MODELS.build(cfg.model)


def test_teacher_checkpoint_under_home(tmp_path, monkeypatch):
    """``~/teacher.pth`` is found: the existence check expands ``~`` as the
    checkpoint reader does."""
    monkeypatch.setenv('HOME', str(tmp_path))
    path = save_random_teacher(DEMO_CONFIG, str(tmp_path / 'teacher.pth'))
    teacher = build_teacher(dict(config=DEMO_CONFIG,
                                 checkpoint='~/teacher.pth'))
    expected = torch.load(path, weights_only=True)
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, expected['state_dict'][key]), key


@pytest.mark.parametrize('recipe', ['convnext', 'segnext'])
def test_recipes_use_the_published_teacher_weights(recipe):
    """The package-teacher recipes point at the checkpoint the package
    publishes for the teacher config (its metafile.yaml's Weights)."""
    cfg = Config.fromfile({'convnext': KD_ADE_CONVNEXT,
                           'segnext': KD_ADE_SEGNEXT}[recipe])
    url = published_weights(cfg.model.teacher.config)
    assert url.startswith('https://download.openmmlab.com/')
    assert cfg.model.teacher.checkpoint == url


def test_missing_local_copy_of_a_published_teacher_gives_its_url():
    """mmseg publishes the ConvNeXt teacher (configs/convnext/
    metafile.yaml); a config of a package cannot be trained by path."""
    cfg = Config.fromfile(KD_ADE_CONVNEXT)
    configure_sync_bn(cfg)
    url = cfg.model.teacher.checkpoint
    cfg.model.teacher.checkpoint = 'checkpoint/upernet_convnext_base.pth'
    with pytest.raises(FileNotFoundError) as error:
        MODELS.build(cfg.model)
    assert "teacher checkpoint 'checkpoint/upernet_convnext_base.pth' not " \
        f'found. Use the published teacher checkpoint: set ' \
        f'model.teacher.checkpoint={url} (downloaded once)' \
        in str(error.value)
    assert 'tools/train.py' not in str(error.value)


def test_teacher_checkpoint_of_another_model(teachers):
    cfg = kd_cfg(KD_DEMO, teachers['upernet-r18'])
    with pytest.raises(CheckpointError,
                       match=r'model\.teacher\.checkpoint does not fit'):
        MODELS.build(cfg.model)


def test_class_count_mismatch(teachers, tmp_path):
    config = tmp_path / 'teacher_7_classes.py'
    config.write_text(f'_base_ = {DEMO_CONFIG!r}\n'
                      'model = dict(decode_head=dict(num_classes=7))\n')
    ckpt = save_random_teacher(str(config), str(tmp_path / 't7.pth'))
    cfg = kd_cfg(KD_DEMO, ckpt)
    cfg.model.teacher.config = str(config)
    with pytest.raises(ValueError, match=r'distill_losses\[0\].*student '
                       r'predicts 5 classes and the teacher 7'):
        MODELS.build(cfg.model)


def test_channel_mismatch_without_connector(teachers):
    mimic = dict(type='FeatureMimicLoss', student='backbone.out.3',
                 teacher='backbone.out.2')
    model = t_to_t_model(teachers, [mimic])
    with pytest.raises(DistillLayerError,
                       match=r"distill_losses\[0\] \(FeatureMimicLoss.*"
                       r"224 channels and the teacher map 120.*"
                       r"student_channels/teacher_channels"):
        model.loss(*batch())
    model = t_to_t_model(teachers, [
        dict(mimic, student_channels=224, teacher_channels=256)])
    with pytest.raises(DistillLayerError, match='teacher_channels=120'):
        model.loss(*batch())


def test_other_config_errors(teachers, tmp_path):
    with pytest.raises(ValueError, match='used more than once'):
        t_to_t_model(teachers, [KL_LOGITS, KL_LOGITS])
    with pytest.raises(ValueError, match='distill_losses is empty'):
        t_to_t_model(teachers, [])
    with pytest.raises(ValueError, match=r'distill_losses\[0\]: set '
                       r'teacher=LAYER'):
        t_to_t_model(teachers, [dict(type='PixelwiseKLLoss',
                                     student='decode_head.logits')])
    config = tmp_path / 'teacher_bgr.py'
    config.write_text(f'_base_ = {DEMO_CONFIG!r}\n'
                      'model = dict(data_preprocessor=dict('
                      'bgr_to_rgb=False))\n')
    cfg = kd_cfg(KD_DEMO, teachers['cgrseg-t'])
    cfg.model.teacher.config = str(config)
    with pytest.raises(ValueError, match='normalises images differently'):
        MODELS.build(cfg.model)


# -- recipes ---------------------------------------------------------------

@contextmanager
def tapped_maps(model: DistillEncoderDecoder):
    """The maps the recipes distil, caught with forward hooks of our own on
    the student and on the teacher: ``maps[role, layer]`` for ``role`` in
    student/teacher and ``layer`` in backbone.out.3/decode_head.logits (the
    last output of ``conv_seg``, i.e. the decode head's logits)."""
    maps = {}

    def keep(role, layer, index=None):

        def hook(module, args, output):
            maps[role, layer] = output if index is None else output[index]

        return hook

    handles = []
    for role, segmentor in (('student', model), ('teacher', model.teacher)):
        handles += [
            segmentor.backbone.register_forward_hook(
                keep(role, 'backbone.out.3', 3)),
            segmentor.decode_head.conv_seg.register_forward_hook(
                keep(role, 'decode_head.logits')),
        ]
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()


def kl_by_hand(student, teacher, temperature, weight, resize_to):
    """Hinton's KD per pixel: KL(softmax(t/T) || softmax(s/T)) summed over
    classes, averaged over the N*H*W pixels, times T^2 and the weight; one
    map resized bilinearly to the other's size first (``resize_to``)."""
    if resize_to == 'student':
        teacher = F.interpolate(teacher, student.shape[-2:],
                                mode='bilinear', align_corners=False)
    else:
        student = F.interpolate(student, teacher.shape[-2:],
                                mode='bilinear', align_corners=False)
    classes = student.shape[1]

    def per_pixel(x):
        return F.log_softmax(
            x.permute(0, 2, 3, 1).reshape(-1, classes) / temperature, dim=1)

    kl = F.kl_div(per_pixel(student), per_pixel(teacher), log_target=True,
                  reduction='batchmean')
    return weight * temperature**2 * kl


def cwd_by_hand(student, teacher, tau, weight):
    """Channel-wise distillation: each channel a distribution over its H*W
    positions, KL(teacher || student) summed, divided by N*C, times tau^2
    and the weight."""

    def per_channel(x):
        return F.log_softmax(x.flatten(0, 1).flatten(1) / tau, dim=1)

    kl = F.kl_div(per_channel(student), per_channel(teacher),
                  log_target=True, reduction='batchmean')
    return weight * tau**2 * kl


def mimic_by_hand(student, teacher, connector, weight):
    """FitNets: mean squared error between the 1x1-connected student map
    and the teacher map (both at stride 32 in the recipes)."""
    assert student.shape[-2:] == teacher.shape[-2:]
    connected = F.conv2d(student, connector.weight, connector.bias)
    return weight * ((connected - teacher)**2).mean()


def expected_distill_losses(model, recipe_losses, maps) -> dict:
    """Each recipe loss recomputed by hand from the tapped maps."""
    expected = {}
    for index, cfg in enumerate(recipe_losses):
        student = maps['student', cfg['student']]
        teacher = maps['teacher', cfg['teacher']]
        if cfg['type'] == 'PixelwiseKLLoss':
            expected['distill.loss_kl'] = kl_by_hand(
                student, teacher, cfg['temperature'], cfg['loss_weight'],
                cfg.get('resize_to', 'student'))
        elif cfg['type'] == 'ChannelWiseDistillationLoss':
            expected['distill.loss_cwd'] = cwd_by_hand(
                student, teacher, cfg['tau'], cfg['loss_weight'])
        else:
            assert cfg['type'] == 'FeatureMimicLoss'
            expected['distill.loss_mimic'] = mimic_by_hand(
                student, teacher, model.distill_losses[index].connector,
                cfg['loss_weight'])
    return expected


@pytest.fixture(scope='module')
def ade_teacher(tmp_path_factory):
    """A random CGRSeg-L ADE20K (150 classes) teacher checkpoint."""
    return save_random_teacher(
        Config.fromfile(KD_ADE).model.teacher.config,
        str(tmp_path_factory.mktemp('ade_teacher') / 'l.pth'))


@pytest.mark.parametrize('recipe,teacher,size', [
    (KD_DEMO, 'cgrseg-l', 128),
    (KD_DEMO_UPERNET, 'upernet-r18', 128),  # teacher logits at stride 4
    (KD_DEMO_SEGNEXT, 'segnext-t', 128),  # mmseg's MSCAN + LightHamHead
    (KD_ADE, 'ade', 64),
])
def test_recipe_losses_are_computed_from_the_tapped_maps(
        teachers, ade_teacher, recipe, teacher, size):
    """Every distillation loss of the recipes equals its formula evaluated
    by hand on the student's and the teacher's layer outputs, caught with
    forward hooks during the same loss() call: the right layers of the
    right models are paired in the right order (student first)."""
    checkpoint = ade_teacher if teacher == 'ade' else teachers[teacher]
    cfg = kd_cfg(recipe, checkpoint)
    model = MODELS.build(cfg.model)
    with tapped_maps(model) as maps:
        losses = model.loss(*batch(2, size))
    assert set(maps) == {(role, layer) for role in ('student', 'teacher')
                         for layer in ('backbone.out.3',
                                       'decode_head.logits')}
    expected = expected_distill_losses(model, cfg.model.distill_losses, maps)
    assert expected.keys() == {k for k in losses if k.startswith('distill.')}
    for key, value in expected.items():
        assert value.item() > 0, key
        assert losses[key].item() == pytest.approx(value.item(), rel=1e-5), \
            key


def test_distillation_gradients_reach_the_student_only(kd_model):
    """Each distillation loss of the demo recipe, back-propagated alone,
    gives non-zero gradients to the student layer it taps and to the layers
    before it (down to the stem), none to the student layers after it, and
    none to the teacher, although the teacher's parameters are switched to
    requires_grad=True for the call (the teacher runs without autograd)."""
    kd_model.train()
    teacher = kd_model.teacher
    teacher.requires_grad_(True)
    stem = 'backbone.patch_embed.0.weight'
    last_stage = 'backbone.network.6.5.mlp.fc2.weight'
    cases = {
        # loss: (student parameters it reaches, parameters it must not)
        'distill.loss_kl': ([stem, last_stage,
                             'decode_head.conv_seg.weight'], []),
        'distill.loss_mimic': ([stem, last_stage,
                                'distill_losses.1.connector.weight'],
                               ['decode_head.conv_seg.weight']),
    }
    try:
        for name, (reached, untouched) in cases.items():
            kd_model.zero_grad(set_to_none=True)
            kd_model.loss(*batch())[name].backward()
            params = dict(kd_model.named_parameters())
            for key in reached:
                grad = params[key].grad
                assert grad is not None and grad.abs().sum() > 0, (name, key)
            for key in untouched:
                assert params[key].grad is None, (name, key)
            assert all(p.grad is None for p in teacher.parameters()), name
    finally:
        teacher.requires_grad_(False)
        kd_model.zero_grad(set_to_none=True)


def test_convnext_recipe_student_is_the_plain_ade20k_student():
    cfg = Config.fromfile(KD_ADE_CONVNEXT)
    assert cfg.model.teacher.config.startswith('mmseg::convnext/')
    configure_sync_bn(cfg)
    plain = Config.fromfile(ADE_T)
    configure_sync_bn(plain)
    assert list(MODELS.build(student_config(cfg.model)).state_dict()) == \
        list(MODELS.build(plain.model).state_dict())


def assert_recipe_takes_a_real_training_step(recipe: str, teacher: str,
                                             tmp_path) -> None:
    """The ADE20K recipe builds with a random-weight ``teacher`` (a
    ``'<package>::'`` config prefix), its student is the plain ADE20K
    CGRSeg-T, and one optimizer step of the config's own wrapper moves the
    student, keeps the teacher, and logs both distillation losses."""
    cfg = Config.fromfile(recipe)
    assert cfg.model.teacher.config.startswith(teacher)
    checkpoint = save_random_teacher(cfg.model.teacher.config,
                                     str(tmp_path / 'teacher.pth'))
    cfg = kd_cfg(recipe, checkpoint)
    plain = Config.fromfile(ADE_T)
    configure_sync_bn(plain)
    assert list(MODELS.build(student_config(cfg.model)).state_dict()) == \
        list(MODELS.build(plain.model).state_dict())
    cfg.model.data_preprocessor.size = (64, 64)  # not padded to 512x512
    model = MODELS.build(cfg.model)
    model.train()
    teacher_before = {k: v.clone()
                      for k, v in model.teacher.state_dict().items()}
    student_before = model.backbone.patch_embed[0].weight.clone()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    log_vars = model.train_step(raw_batch(2, 64), wrapper)
    losses = [key for key in log_vars if key.startswith('distill.loss_')]
    assert len(losses) == 2 and all(log_vars[key] > 0 for key in losses)
    assert not torch.equal(model.backbone.patch_embed[0].weight,
                           student_before)
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key


def test_segnext_recipe_takes_a_real_training_step(tmp_path):
    """The default-install strong teacher (mmseg's SegNeXt-L)."""
    assert_recipe_takes_a_real_training_step(KD_ADE_SEGNEXT,
                                             'mmseg::segnext/', tmp_path)


@pytest.mark.e2e
def test_convnext_recipe_takes_a_real_training_step(tmp_path):
    """The mmpretrain teacher (ConvNeXt-B UPerNet), in a fresh process:
    mmpretrain imports torchvision at module level, and where the real one
    does not import (no torchvision wheel matches the CPU torch wheel), an
    import-only stub stands in for it (tests/helpers/torchvision_stub.py;
    mmpretrain's ConvNeXt never calls torchvision)."""
    proc = run([sys.executable, 'tests/helpers/convnext_recipe_step.py',
                str(tmp_path)])
    assert 'took a training step' in proc.stdout, proc.stdout


def test_convnext_teacher_needs_mmpretrain(tmp_path):
    try:
        import mmpretrain.models  # noqa: F401
        pytest.skip('mmpretrain.models imports here')
    except ImportError:
        pass
    checkpoint = tmp_path / 'convnext.pth'
    torch.save({'state_dict': {}}, checkpoint)
    cfg = kd_cfg(KD_ADE_CONVNEXT, str(checkpoint))
    with pytest.raises(ImportError, match=r"model\.teacher\.config "
                       r"'mmseg::convnext/.*mmpretrain\.models"):
        MODELS.build(cfg.model)


# -- hooks -----------------------------------------------------------------

def test_loss_weight_schedule():
    hook = DistillLossWeightHook(warmup_iters=10, warmup_start=0.2,
                                 decay_begin=20, decay_end=30,
                                 decay_factor=0.5)
    expected = {0: 0.2, 5: 0.6, 10: 1, 19: 1, 20: 1, 25: 0.75, 30: 0.5,
                99: 0.5}
    for i, value in expected.items():
        assert hook.multiplier(i, 100) == pytest.approx(value)
    until_end = DistillLossWeightHook(decay_begin=20)
    assert until_end.multiplier(30, 40) == pytest.approx(0.5)
    assert DistillLossWeightHook().multiplier(0, 10) == 1
    with pytest.raises(ValueError, match='decay_begin'):
        DistillLossWeightHook(warmup_iters=10, decay_begin=5)
    with pytest.raises(ValueError, match='decay_end is set'):
        DistillLossWeightHook(decay_end=5)


def test_loss_weight_hook_scales_the_losses(teachers):
    model = t_to_t_model(teachers, [KL_LOGITS])
    model.eval()  # no dropout: equal forward passes
    inputs, samples = batch()
    full = model.loss(inputs, samples)['distill.loss_kl']
    runner = SimpleNamespace(model=model, iter=5, max_iters=100,
                             message_hub=MessageHub.get_instance('kd'))
    DistillLossWeightHook(warmup_iters=10).before_train_iter(runner, 0)
    assert model.distill_loss_multiplier == 0.5
    half = model.loss(inputs, samples)['distill.loss_kl']
    assert half.item() == pytest.approx(full.item() / 2, rel=1e-6)
    plain = SimpleNamespace(model=torch.nn.Linear(1, 1), iter=0,
                            max_iters=1, message_hub=runner.message_hub)
    with pytest.raises(TypeError, match='DistillEncoderDecoder'):
        DistillLossWeightHook().before_train_iter(plain, 0)


def test_checkpoint_files_the_connectors_beside_the_student(kd_model):
    """DistillStateHook (every config has it) keeps the student alone under
    state_dict and puts the connectors back for a distillation model."""
    plain = MODELS.build(Config.fromfile(DEMO_CONFIG).model)
    hook = DistillStateHook()
    checkpoint = {'state_dict': kd_model.state_dict()}
    hook.before_save_checkpoint(SimpleNamespace(model=kd_model), checkpoint)
    assert list(checkpoint['state_dict']) == list(plain.state_dict())
    assert list(checkpoint['distill_state_dict']) == CONNECTORS
    for_student = dict(checkpoint, state_dict=dict(checkpoint['state_dict']))
    hook.after_load_checkpoint(SimpleNamespace(model=plain), for_student)
    assert list(for_student['state_dict']) == list(plain.state_dict())
    hook.after_load_checkpoint(SimpleNamespace(model=kd_model), checkpoint)
    assert 'distill_state_dict' not in checkpoint
    assert list(checkpoint['state_dict']) == list(kd_model.state_dict())


# -- MMEngine Runner on the demo data ----------------------------------------

def runner_cfg(recipe: str, teacher: str, data_root: str, work_dir: str,
               iters: int) -> Config:
    cfg = kd_cfg(recipe, teacher)
    cfg.merge_from_dict({
        'train_dataloader.dataset.data_root': data_root,
        'val_dataloader.dataset.data_root': data_root,
        'train_dataloader.batch_size': 2,
        'train_cfg.max_iters': iters,
        'train_cfg.val_interval': iters,
        'default_hooks.checkpoint.interval': iters,
        'default_hooks.checkpoint.save_best': None,
        'default_hooks.logger.interval': 1,
        'default_hooks.visualization.draw': False,
        'param_scheduler.1.end': iters,
    })
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.num_workers = 0
        loader.persistent_workers = False
    cfg.val_dataloader.dataset.indices = 4
    cfg.work_dir = work_dir
    return cfg


@pytest.fixture(scope='module')
def kd_run(tmp_path_factory, data_root, teachers):
    """3 iterations of the same-family demo recipe, checkpoint at 3, saved
    by MMEngine's own CheckpointHook: the tests that load iter_3.pth into
    the student (load_segmentor_checkpoint, init_model, init_segmentor,
    tools/test.py) see the layout without the configs' checkpoint hook."""
    work_dir = str(tmp_path_factory.mktemp('kd_run'))
    cfg = runner_cfg(KD_DEMO, teachers['cgrseg-l'], data_root, work_dir, 3)
    cfg.default_hooks.checkpoint.type = 'CheckpointHook'
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner, work_dir


@pytest.mark.e2e
def test_runner_trains_the_student_only(kd_run, teachers):
    runner, _ = kd_run
    model = runner.model
    reference = torch.load(teachers['cgrseg-l'], weights_only=True)
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, reference['state_dict'][key]), key
    in_optimizer = {id(p) for group in
                    runner.optim_wrapper.optimizer.param_groups
                    for p in group['params']}
    assert not in_optimizer & {id(p) for p in model.teacher.parameters()}
    hub = runner.message_hub
    assert hub.get_scalar('train/distill.loss_kl').current() > 0
    assert hub.get_scalar('train/distill.loss_mimic').current() > 0
    # DistillLossWeightHook: warm-up over 50 iterations, last was i = 2.
    assert model.distill_loss_multiplier == pytest.approx(2 / 50)
    assert hub.get_scalar('train/distill_loss_multiplier').current() == \
        pytest.approx(2 / 50)


@pytest.mark.e2e
def test_checkpoint_holds_the_student_and_the_connectors(kd_run):
    runner, work_dir = kd_run
    ckpt = torch.load(osp.join(work_dir, 'iter_3.pth'), weights_only=True)
    plain = MODELS.build(Config.fromfile(DEMO_CONFIG).model)
    assert list(ckpt['state_dict']) == list(plain.state_dict())
    assert list(ckpt['distill_state_dict']) == CONNECTORS
    connector = runner.model.distill_losses[1].connector
    assert torch.equal(ckpt['distill_state_dict']
                       ['distill_losses.1.connector.weight'],
                       connector.weight.detach())
    # The student loads into the plain CGRSeg-T demo config, strictly.
    load_segmentor_checkpoint(plain, osp.join(work_dir, 'iter_3.pth'))
    # ... and resuming restores the connectors as well.
    with torch.no_grad():
        connector.weight.zero_()
    runner.load_checkpoint(osp.join(work_dir, 'iter_3.pth'))
    assert torch.equal(ckpt['distill_state_dict']
                       ['distill_losses.1.connector.weight'],
                       connector.weight.detach())


@pytest.mark.e2e
def test_distillation_checkpoint_saved_by_main_loads(kd_run, tmp_path):
    """A distillation checkpoint in the layout main 8968ee5 saved
    (tests/data/main_kd_checkpoint_layout.json, recorded from its demo
    recipe) loads strictly into the plain student, and resuming from it
    restores the student and the connectors."""
    from reference import rule_tensor
    runner, work_dir = kd_run
    layout = json.loads(
        (REPO / 'tests' / 'data' / 'main_kd_checkpoint_layout.json')
        .read_text())

    def tensors(entries) -> dict:
        return {key: rule_tensor(key, shape) if dtype == 'float32' else
                torch.zeros(shape, dtype=getattr(torch, dtype))
                for key, shape, dtype in entries}

    old = dict(meta=dict(epoch=0, iter=1),
               state_dict=tensors(layout['state_dict']),
               distill_state_dict=tensors(layout['distill_state_dict']))
    path = str(tmp_path / 'main_kd.pth')
    torch.save(old, path)
    plain = MODELS.build(Config.fromfile(DEMO_CONFIG).model)
    load_segmentor_checkpoint(plain, path)
    try:
        runner.load_checkpoint(path)
        state = runner.model.state_dict()
        assert list(state) == [k for k, _, _ in layout['state_dict']] + [
            k for k, _, _ in layout['distill_state_dict']]
        for part in ('state_dict', 'distill_state_dict'):
            for key, value in old[part].items():
                assert torch.equal(state[key], value), key
    finally:
        runner.load_checkpoint(osp.join(work_dir, 'iter_3.pth'))


@pytest.mark.e2e
def test_checkpoint_deploys_as_the_student(kd_run, capsys):
    """mmseg's init_model and init_segmentor (the ONNX exporter's loader)
    read a distillation checkpoint with the plain config, without a
    warning, and predict as the trained student."""
    from mmengine.logging import MMLogger
    from mmseg.apis import init_model

    from cgrseg.apis import init_segmentor
    runner, work_dir = kd_run
    path = osp.join(work_dir, 'iter_3.pth')
    inputs, samples = batch(1)
    runner.model.eval()
    with torch.no_grad():
        expected = runner.model.predict(inputs, samples)[0].seg_logits.data
    logged = []
    logger = MMLogger.get_current_instance()
    logger.addFilter(lambda record: logged.append(record.getMessage()))
    try:
        models = [init_model(DEMO_CONFIG, path, device='cpu'),
                  init_segmentor(DEMO_CONFIG, path)]
    finally:
        logger.filters.clear()
    printed = capsys.readouterr()
    assert 'state_dict' not in ' '.join(logged) + printed.out + printed.err
    for model in models:
        with torch.no_grad():
            got = model.predict(inputs, samples)[0].seg_logits.data
        assert torch.equal(got, expected)


@pytest.mark.e2e
def test_test_tool_with_the_plain_config(kd_run, data_root, tmp_path):
    runner, work_dir = kd_run
    command = documented('docs/distillation.md', 'python tools/test.py', {
        'work_dirs/kd_cgrseg-l-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128/'
        'iter_300.pth': osp.join(work_dir, 'iter_3.pth')})
    proc = run(command + ['--work-dir', str(tmp_path), '--cfg-options',
                          f'test_dataloader.dataset.data_root={data_root}',
                          'test_dataloader.dataset.indices=4'])
    tested = re.findall(r'mIoU: ([\d.]+)', proc.stdout + proc.stderr)
    assert tested, proc.stdout[-3000:]
    validated = runner.message_hub.get_scalar('val/mIoU').current()
    assert float(tested[-1]) == pytest.approx(validated, abs=0.01)


# -- 2-process DDP (gloo) ----------------------------------------------------

PROBE = '''
import os
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class KDProbeHook(Hook):

    def after_run(self, runner):
        wrapper = runner.model
        model = wrapper.module
        teacher = {id(p) for p in model.teacher.parameters()}
        optimized = {id(p) for g in runner.optim_wrapper.optimizer.
                     param_groups for p in g['params']}
        torch.save(dict(
            wrapper=type(wrapper).__name__,
            student=model.state_dict(),
            distill={k: v for k, v in model.state_dict().items()
                     if k.startswith('distill_losses.')},
            teacher=model.teacher.state_dict(),
            teacher_in_ddp=any(id(p) in teacher
                               for p in wrapper.parameters()),
            teacher_in_optimizer=bool(teacher & optimized),
            teacher_training=any(m.training
                                 for m in model.teacher.modules()),
        ), os.path.join(os.environ['KD_PROBE_DIR'], f'rank{get_rank()}.pt'))
'''


@pytest.mark.e2e
def test_two_process_ddp_distillation(data_root, teachers, tmp_path):
    probe_dir, work_dir = tmp_path / 'probe', tmp_path / 'work'
    probe_dir.mkdir()
    (tmp_path / 'kd_probe.py').write_text(PROBE)
    # The recipe with a CGRSeg-T teacher (cheaper than its L) and the probe.
    config = tmp_path / 'kd_ddp.py'
    config.write_text(
        f'_base_ = {KD_DEMO!r}\n'
        f"custom_imports = dict(imports=['cgrseg', 'kd_probe'])\n"
        f"custom_hooks = _base_.custom_hooks + [dict(type='KDProbeHook')]\n"
        f'model = dict(\n'
        f'    teacher=dict(config={DEMO_CONFIG!r}),\n'
        f'    distill_losses=[\n'
        f'        _base_.model.distill_losses[0],\n'
        f'        dict(_base_.model.distill_losses[1], teacher_channels=224)'
        f'])\n')
    run(['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir',
         str(work_dir), '--cfg-options', *tiny_schedule(data_root, 2, 2),
         f'model.teacher.checkpoint={teachers["cgrseg-t"]}',
         'val_dataloader.dataset.indices=4'],
        env=dict(KD_PROBE_DIR=str(probe_dir), PYTHONPATH=str(tmp_path),
                 # tools/dist_train.sh runs `python`: this interpreter
                 PATH=f'{osp.dirname(sys.executable)}:'
                 f'{os.environ["PATH"]}',
                 PORT=str(29500 + (os.getpid() + 500) % 1000)))
    ranks = [torch.load(probe_dir / f'rank{r}.pt', weights_only=True)
             for r in (0, 1)]
    reference = torch.load(teachers['cgrseg-t'],
                           weights_only=True)['state_dict']
    for probe in ranks:
        assert probe['wrapper'] == 'MMDistributedDataParallel'
        assert not probe['teacher_in_ddp']
        assert not probe['teacher_in_optimizer']
        assert not probe['teacher_training']
        for key, value in probe['teacher'].items():
            assert torch.equal(value, reference[key]), key
    for part in ('student', 'distill'):
        for key, value in ranks[0][part].items():
            if 'num_batches_tracked' in key or 'running_' in key:
                continue  # BN statistics are per process (plain BN on CPU)
            assert torch.equal(value, ranks[1][part][key]), key
    checkpoints = glob.glob(str(work_dir / '*.pth'))
    assert [osp.basename(c) for c in checkpoints] == ['iter_2.pth']
    ckpt = torch.load(checkpoints[0], weights_only=True)
    assert not any('teacher' in key for key in ckpt['state_dict'])
