"""Train-mode parity with the original 0.x CGRSeg-T: loss, accuracy, the
gradient of every parameter, BN modes, the optimizer's per-parameter lr and
weight decay (from the shipped config) and one AdamW step.

``init_cfg_like_real_config`` is what real training did (backbone BNs use
batch statistics, ``norm_eval=False``, the config default); ``no_init_cfg`` is
the original built without a pretrained checkpoint (``norm_eval=True``)."""
from collections import Counter

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from torch.nn.modules.batchnorm import _BatchNorm

from reference import build_reference_model, fixture_input, load_fixture

VARIANTS = {'init_cfg_like_real_config': False, 'no_init_cfg': True}


def rel(actual: float, expected: float) -> float:
    return abs(actual - expected) / max(abs(expected), 1e-12)


@pytest.fixture(scope='module')
def fixture():
    return load_fixture('cgrseg_t_train_2x3x256x256.pt')


def train_step(variant: str, ref: dict):
    model, cfg = build_reference_model(
        't', **{'model.backbone.norm_eval': VARIANTS[variant]})
    model.train()
    model.decode_head.dropout.p = 0.0
    x = fixture_input(ref)
    samples = []
    for label in ref['labels']:
        sample = SegDataSample(
            metainfo=dict(img_shape=x.shape[-2:], ori_shape=x.shape[-2:]))
        sample.gt_sem_seg = PixelData(data=label.long())
        samples.append(sample)
    losses = model.loss(x, samples)
    loss, log_vars = model.parse_losses(losses)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    optim_wrapper.zero_grad()
    loss.backward()
    return model, losses, loss, optim_wrapper


@pytest.fixture(scope='module', params=list(VARIANTS))
def stepped(request, fixture):
    ref = fixture[request.param]
    model, losses, loss, optim_wrapper = train_step(request.param, ref)
    return request.param, ref, model, losses, loss, optim_wrapper


def test_loss_and_accuracy(stepped):
    _, ref, _, losses, loss, _ = stepped
    expected = ref['losses']
    assert rel(losses['decode.loss_ce'].item(),
               expected['decode.loss_ce']) < 1e-4
    assert rel(loss.item(), expected['loss']) < 1e-4
    assert rel(losses['decode.acc_seg'].item(),
               expected['decode.acc_seg']) < 1e-4


def test_bn_modes(stepped):
    variant, ref, model, *_ = stepped
    modes = {
        name: m.training
        for name, m in model.named_modules() if isinstance(m, _BatchNorm)
    }
    expected = {name: training for name, _, training in ref['bn_modes']}
    assert modes == expected


def test_every_gradient(stepped):
    """Each parameter's gradient norm within 1e-4 relative. Parameters whose
    gradient is structurally zero (a bias before a train-mode BN, a shift
    before a softmax) have reference norms of 1e-11..1e-6, i.e. float noise,
    so an absolute floor of 1e-6 x the total gradient norm applies too."""
    _, ref, model, *_ = stepped
    params = dict(model.named_parameters())
    assert set(params) == set(ref['grad_norms'])
    assert ref['params_without_grad'] == []
    total = sum(v**2 for v in ref['grad_norms'].values())**0.5
    for name, norm in ref['grad_norms'].items():
        actual = params[name].grad.norm().item()
        assert abs(actual - norm) <= 1e-4 * norm + 1e-6 * total, name
    for name, grad in ref['grads'].items():
        err = (params[name].grad - grad).abs().max()
        assert err <= 1e-4 * grad.abs().max() + 1e-6 * total, name


def test_param_lr_and_weight_decay(stepped):
    _, ref, model, _, _, optim_wrapper = stepped
    names = {id(p): n for n, p in model.named_parameters()}
    actual = {}
    for group in optim_wrapper.optimizer.param_groups:
        for param in group['params']:
            actual[names[id(param)]] = (group['lr'], group['weight_decay'])
    expected = ref['optimizer']['param_lr_wd']
    assert set(actual) == set(expected)
    for name, (lr, wd) in expected.items():
        assert actual[name] == pytest.approx((lr, wd), rel=1e-9), name
    groups = Counter((round(lr, 12), round(wd, 12)) for lr, wd in actual.values())
    # M2: head (incl. the backbone's talking heads) at lr x10; backbone
    # '*norm*' names without weight decay; everything else at the base values.
    assert groups == {(1.2e-3, 0.01): 171, (1.2e-4, 0.0): 130,
                      (1.2e-4, 0.01): 282}


def test_adamw_step(stepped):
    """One step of the config's optimizer from the reference gradients gives
    the original's parameters. (Reference gradients, because Adam's first
    step lr*g/(|g|+eps) amplifies the float noise of gradients near eps,
    e.g. some elements of linear_fuse.conv.weight at 1e-9.)"""
    _, ref, model, _, _, optim_wrapper = stepped
    params = dict(model.named_parameters())
    before = ref['optimizer']['picked_params_before_step']
    after = ref['optimizer']['picked_params_after_step']
    assert set(before) <= set(ref['grads'])
    for name, value in before.items():
        assert torch.equal(params[name].detach(), value), name
        params[name].grad = ref['grads'][name].clone()
    optim_wrapper.step()
    for name, value in after.items():
        delta = (value - before[name]).abs().max()
        err = (params[name].detach() - value).abs().max()
        assert err <= 1e-4 * delta, name
