"""The tier that stands in for a GPU where the CPU can (docs/gpu.md): CUDA's
fp16 autocast emulated on the CPU (tests/cuda_emulation.py), and the models
of every config on the 'meta' device under a recorder that fails on a
tensor created off the model's device."""
import glob
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from cuda_emulation import (OffDeviceRecorder, cuda_autocast_on_cpu,
                            emulated_overloads)
from e2e import DEMO_CONFIG, REPO
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import cgrseg  # noqa: F401


def build_segmentor(config: str, **model_options) -> torch.nn.Module:
    """The config's segmentor, randomly initialised (no pretrained weights),
    without its data preprocessor."""
    init_default_scope('mmseg')
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    cfg.model.data_preprocessor = None
    cfg.model.update(model_options)
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def samples(batch: int, size: int, device: str) -> list:
    out = []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(
            img_shape=(size, size), pad_shape=(size, size),
            ori_shape=(size, size)))
        sample.gt_sem_seg = PixelData(data=torch.zeros(
            1, size, size, dtype=torch.long, device=device))
        out.append(sample)
    return out


def test_emulation_runs_cudas_float32_ops_in_float32():
    """CPU autocast leaves softmax, sum, layer_norm and bilinear upsampling
    in fp16 (issue 25, item 4); under the emulation they run in float32,
    as under CUDA autocast; matmuls stay fp16."""
    assert {'softmax.int', 'sum.default', 'layer_norm.default',
            'upsample_bilinear2d.default', 'log_softmax.int'} <= set(
                emulated_overloads())
    x, w = torch.randn(2, 8), torch.randn(8, 8)

    def dtypes():
        y = x @ w
        return [y.dtype, y.softmax(-1).dtype, y.sum().dtype,
                F.layer_norm(y, (8, )).dtype,
                F.interpolate(y[None, None], scale_factor=2.,
                              mode='bilinear').dtype]

    with torch.autocast('cpu', dtype=torch.float16):
        assert dtypes() == [torch.float16] * 5
    with cuda_autocast_on_cpu():
        assert dtypes() == [torch.float16] + [torch.float32] * 4
    with torch.autocast('cpu', dtype=torch.float16):  # registrations gone
        assert (x @ w).softmax(-1).dtype == torch.float16


@pytest.mark.e2e  # fp16 kernels are slow on the CPU: 2-3 minutes
def test_amp_training_step_under_emulated_cuda_fp16(monkeypatch):
    """One step of the demo CGRSeg-T as ``--amp`` trains it on CUDA: fp16
    autocast with CUDA's float32 ops, the CUDA optim wrapper with a
    GradScaler: finite loss, the step taken, every parameter a gradient."""
    from test_fp16 import cuda_amp_wrapper
    model = build_segmentor(DEMO_CONFIG)
    # GradScaler's default 2^16 overflows this random model's fp16
    # gradients (a skipped step, then the back-off: seen here); 2^8 steps
    wrapper = cuda_amp_wrapper(monkeypatch, model,
                               loss_scale=dict(init_scale=2.**8))
    before = [p.detach().clone() for p in model.parameters()]
    with cuda_autocast_on_cpu():
        losses = model(torch.randn(2, 3, 32, 32), samples(2, 32, 'cpu'),
                       mode='loss')
    loss = losses['decode.loss_ce']
    assert torch.isfinite(loss)
    wrapper.backward(loss)
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    wrapper.step()
    assert wrapper.total_skips == 0
    assert any(not torch.equal(a, p) for a, p in zip(before,
                                                        model.parameters()))


def model_configs() -> list:
    """Every CGRSeg config; e2e but the demo's and ADE20K CGRSeg-T's
    (building each costs 10-30 s on the loaded 2-core machine)."""
    configs = sorted(glob.glob(str(REPO / 'configs' / 'cgrseg' / '*.py')) +
                     glob.glob(str(REPO / 'configs' / 'own_data' / '*.py')))
    return [
        pytest.param(path, id=osp.basename(path)[:-3], marks=[
            pytest.mark.e2e
        ] if not ('shapes' in path or 's1_4xb4-adamw-160k_ade20k' in path)
                  else []) for path in configs
    ]


@pytest.mark.parametrize('config', model_configs())
def test_model_on_meta_device_trains_and_infers(config):
    """On 'meta' (no memory, no compute) nothing may create a tensor on
    another device, which on a GPU is a host tensor, a copy or an error;
    every parameter gets a gradient (DDP runs without
    ``find_unused_parameters``)."""
    import torch.fx.experimental._config as fx_config
    model = build_segmentor(config).to('meta')
    x = torch.randn(2, 3, 64, 64, device='meta')
    # mmseg's accuracy indexes with a mask: on 'meta' its size is assumed
    with OffDeviceRecorder('meta'), fx_config.patch(
            meta_nonzero_assume_all_nonzero=True):
        losses = model.train()(x, samples(2, 64, 'meta'), mode='loss')
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        with torch.no_grad():
            logits = model.eval()(x, mode='tensor')
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert logits.device.type == 'meta' and logits.shape[-1] == 8


def calibrated_segmentor(config: str, size: int) -> torch.nn.Module:
    """Random init, BN running statistics set from a batch at ``size``
    (cumulative averages, momentum None), in eval mode."""
    model = build_segmentor(config)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(2, 3, size, size), mode='tensor')
    return model.eval()


@pytest.mark.e2e
def test_fp16_logits_finite_at_stress_inputs_512():
    """Inputs x30 on the 512² ADE20K CGRSeg-T (random init, BN calibrated)
    under emulated CUDA fp16 autocast: finite logits (q·k overflowed fp16
    at backbone.network.6.4.token_mixer before q was scaled first)."""
    config = str(REPO / 'configs' / 'cgrseg' /
                 'cgrseg_efficientformerv2-s1_4xb4-adamw-160k_ade20k-'
                 '512x512.py')
    model = calibrated_segmentor(config, 512)
    torch.manual_seed(1)
    with torch.no_grad(), cuda_autocast_on_cpu():
        logits = model(torch.randn(1, 3, 512, 512) * 30, mode='tensor')
    assert logits.dtype == torch.float16
    assert torch.isfinite(logits).all()


def distill_recipes() -> list:
    """The demo distillation recipes with a live teacher (the ADE20K ones
    build the same classes at a larger teacher). Not the SegNeXt teacher's:
    mmseg's HamHead draws its bases with ``torch.rand(...).to(get_device())``
    (host, then copied; mmseg's code, right on one GPU), which the recorder
    rejects."""
    return sorted(path for path in glob.glob(
        str(REPO / 'configs' / 'distill' / 'kd_*shapes-128x128.py'))
                  if 'stored-targets' not in path and 'segnext' not in path)


@pytest.mark.parametrize('recipe', [
    pytest.param(path, id=osp.basename(path).split('_')[1])
    for path in distill_recipes()
])
def test_distillation_on_meta_device_trains(recipe, tmp_path):
    """A distillation recipe (random teacher) on 'meta': the teacher's
    forward, the taps, connectors and losses create nothing off the
    device, and every student and connector parameter gets a gradient."""
    import torch.fx.experimental._config as fx_config

    from cgrseg.models.segmentors.teacher import build_teacher_model
    cfg = Config.fromfile(recipe)
    init_default_scope('mmseg')
    teacher = str(tmp_path / 'teacher.pth')
    torch.manual_seed(0)
    torch.save({'state_dict': build_teacher_model(
        cfg.model.teacher.config).state_dict()}, teacher)
    cfg.model.teacher.checkpoint = teacher
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model).to('meta')
    x = torch.randn(2, 3, 64, 64, device='meta')
    with OffDeviceRecorder('meta'), fx_config.patch(
            meta_nonzero_assume_all_nonzero=True):
        losses = model.train()(x, samples(2, 64, 'meta'), mode='loss')
        assert any('distill' in k for k in losses), sorted(losses)
        sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert [n for n, p in model.named_parameters()
            if p.requires_grad and p.grad is None] == []


def test_deploy_segmentor_on_meta_device():
    """The deployed image -> logits module on 'meta' (its preprocessing,
    padding, resize and crop): nothing created off the device."""
    from cgrseg.deploy.segmentor import DeploySegmentor
    cfg = Config.fromfile(DEMO_CONFIG)
    init_default_scope('mmseg')
    cfg.model.backbone.init_cfg = None
    deploy = DeploySegmentor(MODELS.build(cfg.model), outputs=('logits', ))
    deploy = deploy.to('meta')
    with OffDeviceRecorder('meta'), torch.no_grad():
        out = deploy(torch.rand(1, 3, 70, 90, device='meta') * 255)
    assert out['logits'].shape == (1, 5, 70, 90)
