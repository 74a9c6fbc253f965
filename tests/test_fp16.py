"""fp16 numerics that CUDA training with ``--amp`` meets and the CPU's
float32 runs cannot show."""
import pytest
import torch

from cgrseg.models.backbones.blockwise_attention import biased_scores


def test_scores_scale_q_before_matmul_in_fp16():
    """|q·k| = 16·32·256 = 131072 > 65504 overflows fp16, the scaled score
    (×d^-0.5 = 1/16 → 8192) does not: q is scaled before the matmul."""
    d = 256
    q = torch.full((1, 1, 2, d), 16., dtype=torch.half)
    k = torch.full((1, 1, 3, d), 32., dtype=torch.half)
    bias = torch.zeros(1, 1, 2, 3, dtype=torch.half)
    scores = biased_scores(q, k, d**-0.5, bias)
    assert torch.isfinite(scores).all()
    assert torch.equal(scores, torch.full_like(scores, 8192.))


def cuda_amp_wrapper(monkeypatch, model: torch.nn.Module, **options):
    """The optim wrapper that ``--amp`` builds on CUDA, with CUDA's
    GradScaler swapped for the CPU's (same algorithm, torch.amp)."""
    import functools

    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    from mmengine.registry import DefaultScope

    from cgrseg.engine.tool_setup import configure_amp
    cfg = Config(dict(optim_wrapper=dict(
        type='NonFiniteSkipOptimWrapper', max_consecutive_skips=3,
        optimizer=dict(type='SGD', lr=0.1), **options)))
    with monkeypatch.context() as cuda:
        cuda.setattr(torch.cuda, 'is_available', lambda: True)
        cuda.setattr(torch.cuda, 'device_count', lambda: 1)  # for logging
        configure_amp(cfg, enable=True)
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available',
                        lambda: True)
    monkeypatch.setattr(amp_optimizer_wrapper, 'GradScaler',
                        functools.partial(torch.amp.GradScaler, 'cpu'))
    with DefaultScope.overwrite_default_scope('mmseg'):
        return build_optim_wrapper(model, cfg.optim_wrapper)


def bn_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4),
        torch.nn.Conv2d(4, 1, 1))


def amp_step(wrapper, model, x: torch.Tensor, factor: float = 1.) -> None:
    with wrapper.optim_context(model):
        loss = model(x).square().mean() * factor
    wrapper.update_params(loss)


def test_cuda_amp_scale_grows_and_backs_off(monkeypatch):
    model = bn_model()
    wrapper = cuda_amp_wrapper(
        monkeypatch, model, loss_scale=dict(init_scale=2.**10,
                                            growth_interval=2))
    x = torch.randn(2, 3, 4, 4)
    for _ in range(2):
        amp_step(wrapper, model, x)
    assert wrapper.loss_scaler.get_scale() == 2.**11
    assert wrapper.total_skips == 0
    weights = [p.detach().clone() for p in model.parameters()]
    buffers = [b.detach().clone() for b in model.buffers()]
    # A finite loss that overflows float32 once scaled by 2^11: inf
    # gradients, a skipped step, the scale halved.
    amp_step(wrapper, model, x, factor=1e36)
    assert wrapper.loss_scaler.get_scale() == 2.**10
    assert wrapper.total_skips == 1
    assert all(map(torch.equal, weights, model.parameters()))
    assert all(map(torch.equal, buffers, model.buffers()))


def test_cuda_amp_overflow_restores_bn_and_stops(monkeypatch):
    model = bn_model()
    wrapper = cuda_amp_wrapper(monkeypatch, model)
    amp_step(wrapper, model, torch.randn(2, 3, 4, 4))
    buffers = [b.detach().clone() for b in model.buffers()]
    scale = wrapper.loss_scaler.get_scale()
    # An overflowing forward: BN's running statistics see inf.
    bad = torch.full((2, 3, 4, 4), 7e4)
    bad[0, 0, 0, 0] = float('inf')
    for skipped in (1, 2):
        amp_step(wrapper, model, bad)
        assert wrapper.consecutive_skips == skipped
        assert all(map(torch.equal, buffers, model.buffers()))
    assert wrapper.loss_scaler.get_scale() == scale / 4
    with pytest.raises(FloatingPointError, match='3 consecutive'):
        amp_step(wrapper, model, bad)
