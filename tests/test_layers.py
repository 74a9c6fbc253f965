"""The head's building blocks against hand-computed formulas."""
import torch
import torch.nn.functional as F

from cgrseg.models.layers import (RCA, RCM, DPGBlock, FuseBlockMulti,
                                  PyramidPoolAgg)


def test_rca_formula():
    torch.manual_seed(0)
    rca = RCA(4, band_kernel_size=5, square_kernel_size=3).eval()
    x = torch.randn(2, 4, 7, 9)
    axial = x.mean(3, keepdim=True).expand_as(x) + x.mean(2, keepdim=True)
    e = rca.excite
    h = F.conv2d(axial, e[0].weight, e[0].bias, padding=(0, 2), groups=4)
    h = F.relu(F.batch_norm(h, e[1].running_mean, e[1].running_var,
                            e[1].weight, e[1].bias))
    att = torch.sigmoid(
        F.conv2d(h, e[3].weight, e[3].bias, padding=(2, 0), groups=4))
    local = F.conv2d(x, rca.dwconv_hw.weight, rca.dwconv_hw.bias, padding=1,
                     groups=4)
    torch.testing.assert_close(rca(x), att * local)


def test_rcm_is_residual_with_layer_scale():
    torch.manual_seed(0)
    block = RCM(8, band_kernel_size=3).eval()
    x = torch.randn(1, 8, 5, 5)
    assert block.gamma.eq(1e-6).all()
    branch = block.mlp(block.norm(block.token_mixer(x)))
    torch.testing.assert_close(block(x), x + branch * 1e-6)
    assert block.mlp.fc1.out_channels == 16


def test_dpg_at_init_halves_the_input():
    """H11: the last conv starts at zero, so the gate is sigmoid(0) = 0.5."""
    dpg = DPGBlock(6, 6)
    x, protos = torch.randn(2, 6, 4, 4), torch.randn(2, 6, 10, 1)
    torch.testing.assert_close(dpg(x, protos), 0.5 * x)
    assert dpg.channel_mul_conv[-1].weight.abs().sum() == 0


def test_dpg_formula():
    torch.manual_seed(0)
    dpg = DPGBlock(6, 6)
    torch.nn.init.normal_(dpg.channel_mul_conv[-1].weight)
    x, protos = torch.randn(2, 6, 4, 4), torch.randn(2, 6, 10, 1)
    w = F.conv2d(protos, dpg.conv_mask.weight, dpg.conv_mask.bias)
    w = w.flatten(1).softmax(1)  # (B, K)
    context = torch.einsum('bck,bk->bc', protos[..., 0], w)[..., None, None]
    gate = torch.sigmoid(dpg.channel_mul_conv(context))
    torch.testing.assert_close(dpg(x, protos), x * gate)


def test_pyramid_pool_agg_sizes():
    feats = [torch.randn(1, 2, 32, 24), torch.randn(1, 3, 16, 12),
             torch.randn(1, 4, 7, 5)]
    out = PyramidPoolAgg(stride=2)(feats)
    assert out.shape == (1, 9, 4, 3)
    torch.testing.assert_close(out[:, 5:], F.adaptive_avg_pool2d(feats[2],
                                                                 (4, 3)))


def test_fuse_block_gate():
    torch.manual_seed(0)
    block = FuseBlockMulti(4, 6, norm_cfg=dict(type='BN')).eval()
    x_l, x_h = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 2, 2)
    gate = F.interpolate(
        torch.clamp(block.fuse2(x_h) + 3, 0, 6) / 6, size=(8, 8),
        mode='bilinear', align_corners=False)
    torch.testing.assert_close(block(x_l, x_h), block.fuse1(x_l) * gate)
