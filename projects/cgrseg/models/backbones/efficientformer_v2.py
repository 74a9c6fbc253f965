"""EfficientFormerV2 backbone (Li et al., "Rethinking Vision Transformers for
MobileNet Size and Speed", ICCV 2023) as used by CGRSeg for dense prediction.

One class, :class:`EfficientFormerV2`, with the sizes S0/S1/S2/L as rows of
``ARCH_SETTINGS``. State-dict keys, shapes and order are those of the released
EfficientFormerV2 and CGRSeg checkpoints, which load with ``strict=True``:

``patch_embed.{0,1,3,4}``, ``network.{0,2,4,6}`` (stages of FFN/AttnFFN
blocks), ``network.{1,3}.{proj,norm}`` (conv downsamples) and
``network.5.{attn,conv,bn}`` (attention downsample). The codes Qn in
comments name behaviour kept or fixed for those checkpoints, see
docs/porting.md.
"""
import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptConfigType
from torch.nn.modules.batchnorm import _BatchNorm

from ..utils.tracing import has_symbolic_size
from .bicubic_taps import (CubicTaps, cached_cubic_taps, cubic_taps,
                           cubic_taps_shared, resize_along)
from .blockwise_attention import (BiasBlock, ResizedBias, attention_in_blocks,
                                  biased_scores, sdpa_in_blocks)
from .efficientformer_v2_arch import ARCH_SETTINGS, relative_offset_index
from .efficientformer_v2_weights import load_pretrained_backbone


def conv_bn(in_dim: int,
            out_dim: int,
            norm_cfg: ConfigType,
            kernel_size: int = 1,
            stride: int = 1,
            groups: int = 1) -> nn.Sequential:
    """Conv (padding ``kernel_size // 2``) then norm: keys ``0`` and ``1``."""
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel_size, stride, kernel_size // 2,
                  groups=groups),
        build_norm_layer(norm_cfg, out_dim)[1])


def reads_back_cheaply(device: torch.device) -> bool:
    """Whether comparing a tensor's values on ``device`` costs no wait for
    the device (the CPU's)."""
    return device.type == 'cpu'


class AttentionBiasMixin:
    """Learned relative-position bias, resized to the actual token counts.

    The table ``attention_biases_seg`` (heads, num_offsets) is gathered to
    (heads, Nq_table, Nk_table) and resized bicubically to (heads, Nq, Nk) when
    the input is not at the native ``resolution`` (docs/porting.md Q3), as a
    :class:`ResizedBias` that computes blocks of rows on demand (the full
    (heads, Nq, Nk) bias is never built, docs/porting.md Q22). Without
    autograd its per-size parts are cached. On the CPU the cache is keyed
    on the table's values, device and dtype, so any change of the weights
    (loading, an optimizer step, ``.to()``, a write through ``.data`` as
    MMEngine's ``EMAHook`` does) is seen by the next forward. On an
    accelerator comparing values would wait for the device (a host sync
    per attention and call): there only the taps, which depend on the
    sizes alone, are cached, and the small table is resized again at each
    call (microseconds there; the same numbers).
    """

    attention_biases_seg: nn.Parameter
    attention_bias_idxs_seg: torch.Tensor
    checkpoint_hint: str = ''

    def _register_bias_table(self, num_heads: int, query_res: int,
                             key_res: int, stride: int,
                             legacy_shape: Tuple[int, int]) -> None:
        index, num_offsets = relative_offset_index(query_res, key_res, stride)
        self.attention_biases_seg = nn.Parameter(
            torch.zeros(num_heads, num_offsets))
        # Never read: these buffers exist only so that released ImageNet and
        # CGRSeg checkpoints load with strict=True (docs/porting.md Q5).
        self.register_buffer('attention_biases',
                             torch.zeros(num_heads, legacy_shape[1]))
        self.register_buffer('attention_bias_idxs',
                             torch.ones(legacy_shape, dtype=torch.long))
        self.register_buffer('attention_bias_idxs_seg', index)
        self._bias_cache: Optional[tuple] = None

    def _resize_bias(self,
                     num_queries: int,
                     num_keys: int,
                     taps_of: Callable[..., CubicTaps] = cubic_taps
                     ) -> ResizedBias:
        table = self.attention_biases_seg[:, self.attention_bias_idxs_seg]
        table_queries, table_keys = table.shape[-2:]
        # A graph traced with symbolic sizes must keep the resize for every
        # size; at the table's own size bicubic resizing is the identity.
        symbolic = has_symbolic_size(num_queries, num_keys)
        if symbolic or num_keys != table_keys:
            table = resize_along(
                table, taps_of(table_keys, num_keys, table.device), -1)
        row_taps = None
        if symbolic or num_queries != table_queries:
            row_taps = taps_of(table_queries, num_queries, table.device)
        return ResizedBias(table, row_taps)

    def attention_bias(self, num_queries: int,
                       num_keys: int) -> ResizedBias:
        # Traced graphs (torch.compile, torch.export, ONNX) compute the bias
        # in the graph: a cache keyed on storage pointers cannot be traced.
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self._resize_bias(num_queries, num_keys)
        table = self.attention_biases_seg.detach()
        if not reads_back_cheaply(table.device):
            return self._resize_bias(num_queries, num_keys,
                                     cached_cubic_taps)
        # Keyed on the table's values (a few thousand numbers), not on its
        # storage and version counter: a write through ``.data`` (MMEngine's
        # EMAHook swaps the averaged weights in that way) changes neither.
        # The index buffer is constant; loading it bumps its version
        # (Tensor._version, autograd's in-place counter: no public API).
        index = self.attention_bias_idxs_seg
        key = (index.data_ptr(), index._version, num_queries, num_keys)
        cache = self._bias_cache
        if (cache is None or cache[0] != key
                or cache[1].device != table.device
                or cache[1].dtype != table.dtype
                or not torch.equal(cache[1], table)):
            self._bias_cache = (key, table.clone(),
                                self._resize_bias(num_queries, num_keys))
        return self._bias_cache[2]

    def _check_bias_table(self, state_dict: dict, prefix: str) -> None:
        """Name the ``resolution`` mismatch instead of a bare size error."""
        key = prefix + 'attention_biases_seg'
        if key in state_dict and (state_dict[key].shape !=
                                  self.attention_biases_seg.shape):
            raise ValueError(
                f'checkpoint entry {key!r} has shape '
                f'{tuple(state_dict[key].shape)} but this backbone expects '
                f'{tuple(self.attention_biases_seg.shape)}: the bias tables '
                f'depend on the backbone argument `resolution` '
                f'({self.checkpoint_hint}). Build the backbone with the '
                f'`resolution` the checkpoint was trained with (CGRSeg '
                f'checkpoints use the default 512).')

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._check_bias_table(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def mix_heads(weight: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """The product of a talking-heads 1×1 conv's (h, h, 1, 1) ``weight``
    with (B, h, r, N) attention maps, as one (h, h) matmul: ONNX Runtime runs
    a Conv of 8 channels on such maps through NCHWc layout reorders, which
    cost more than the product itself. The conv's bias is the caller's."""
    batch, heads, rows, keys = attn.shape
    mixed = weight.view(heads, heads) @ attn.reshape(
        batch, heads, rows * keys)
    return mixed.view(batch, heads, rows, keys)


class Attention4D(AttentionBiasMixin, nn.Module):
    """Multi-head self-attention over a (B, C, H, W) map with talking heads.

    With ``stride=2`` the map is first reduced by a depthwise 3×3 stride-2
    conv + BN, attention runs on the reduced grid, and the result is upsampled
    bilinearly back to (H, W). ``v_local`` (depthwise 3×3 conv + BN on v) is
    added before the output projection (act → 1×1 conv → BN).

    Shapes: (B, dim, H, W) → (B, dim, H, W).
    """

    def __init__(self,
                 dim: int,
                 resolution: int,
                 stride: Optional[int] = None,
                 key_dim: int = 32,
                 num_heads: int = 8,
                 attn_ratio: int = 4,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = dict(type='GELU')):
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.dh = attn_ratio * key_dim * num_heads
        if stride is not None:
            resolution = math.ceil(resolution / stride)
            self.stride_conv = conv_bn(
                dim, dim, norm_cfg, 3, stride, groups=dim)
        else:
            self.stride_conv = None
        self.checkpoint_hint = (f'a {resolution}x{resolution} token grid '
                                f'gives {resolution**2} offsets')
        qk_dim = key_dim * num_heads
        self.q = conv_bn(dim, qk_dim, norm_cfg)
        self.k = conv_bn(dim, qk_dim, norm_cfg)
        self.v = conv_bn(dim, self.dh, norm_cfg)
        self.v_local = conv_bn(
            self.dh, self.dh, norm_cfg, 3, groups=self.dh)
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.proj = nn.Sequential(
            build_activation_layer(act_cfg), nn.Conv2d(self.dh, dim, 1),
            build_norm_layer(norm_cfg, dim)[1])
        self._register_bias_table(
            num_heads, resolution, resolution, 1, legacy_shape=(49, 49))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        h, w = x.shape[-2:]
        n = h * w
        q = self.q(x).flatten(2).reshape(B, self.num_heads, -1, n)
        k = self.k(x).flatten(2).reshape(B, self.num_heads, -1, n)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.flatten(2).reshape(B, self.num_heads, -1, n).transpose(2, 3)

        out = attention_in_blocks(q.transpose(2, 3), k.transpose(2, 3), v,
                                  self.attention_bias(n, n), self._attend)
        out = out.transpose(2, 3).reshape(B, self.dh, h, w) + v_local
        if self.stride_conv is not None:
            out = F.interpolate(
                out, size=(H, W), mode='bilinear', align_corners=False)
        return self.proj(out)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                bias: BiasBlock) -> torch.Tensor:
        """Rows of softmax(th1(q·k·scale + bias)) mixed by th2, times v.
        The talking heads sit between scores and softmax, so this is spelled
        out rather than ``scaled_dot_product_attention``.

        Shapes: q (B, h, r, d), k (B, h, N, d), v (B, h, N, dv) →
        (B, h, r, dv).
        """
        attn = biased_scores(q, k, self.scale, bias)
        th1, th2 = self.talking_head1, self.talking_head2
        b1, b2 = th1.bias.view(-1, 1, 1), th2.bias.view(-1, 1, 1)
        if torch.is_grad_enabled():
            attn = (mix_heads(th1.weight, attn) + b1).softmax(dim=-1)
            return (mix_heads(th2.weight, attn) + b2) @ v
        # Without autograd, the two passes over the scores that adding the
        # talking heads' biases costs are skipped: th1's adds one constant to
        # each head's row of scores, which the softmax cancels, and th2's,
        # times v, is its bias times v summed over the keys. (With autograd
        # both stay, so that th1.bias gets its (zero) gradient as in the
        # original: DDP expects every parameter to take part.)
        attn = mix_heads(th1.weight, attn).softmax(dim=-1)
        return mix_heads(th2.weight, attn) @ v + b2 * v.sum(2, keepdim=True)


class LocalGlobalQuery(nn.Module):
    """Query of the attention downsample: 1×1 conv + BN of
    (depthwise 3×3 stride-2 conv(x) + stride-2 subsampling of x).

    Shapes: (B, C, H, W) → (B, out_dim, ceil(H/2), ceil(W/2)).
    """

    def __init__(self, in_dim: int, out_dim: int, norm_cfg: ConfigType):
        super().__init__()
        self.pool = nn.AvgPool2d(1, 2, 0)
        self.local = nn.Sequential(
            nn.Conv2d(in_dim, in_dim, 3, 2, 1, groups=in_dim))
        self.proj = conv_bn(in_dim, out_dim, norm_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.local(x) + self.pool(x))


class Attention4DDownsample(AttentionBiasMixin, nn.Module):
    """Attention whose queries live on the stride-2 grid (keys and values on
    the full grid): a learned, content-aware 2× downsample.

    Shapes: (B, dim, H, W) → (B, out_dim, ceil(H/2), ceil(W/2)).
    """

    def __init__(self,
                 dim: int,
                 out_dim: int,
                 resolution: int,
                 key_dim: int = 16,
                 num_heads: int = 8,
                 attn_ratio: int = 4,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = dict(type='GELU')):
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.dh = attn_ratio * key_dim * num_heads
        query_res = math.ceil(resolution / 2)
        self.checkpoint_hint = (f'{query_res}x{query_res} queries over '
                                f'{resolution}x{resolution} keys')
        qk_dim = key_dim * num_heads
        self.q = LocalGlobalQuery(dim, qk_dim, norm_cfg)
        self.k = conv_bn(dim, qk_dim, norm_cfg)
        self.v = conv_bn(dim, self.dh, norm_cfg)
        self.v_local = conv_bn(
            self.dh, self.dh, norm_cfg, 3, 2, groups=self.dh)
        self.proj = nn.Sequential(
            build_activation_layer(act_cfg), nn.Conv2d(self.dh, out_dim, 1),
            build_norm_layer(norm_cfg, out_dim)[1])
        stride = math.ceil(resolution / query_res)
        self._register_bias_table(
            num_heads, query_res, resolution, stride, legacy_shape=(49, 196))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        q = self.q(x)
        h, w = q.shape[-2:]
        q = q.flatten(2).reshape(B, self.num_heads, -1, h * w).transpose(2, 3)
        k = self.k(x).flatten(2).reshape(B, self.num_heads, -1, H * W)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.flatten(2).reshape(B, self.num_heads, -1, H * W).transpose(2, 3)

        out = sdpa_in_blocks(q, k.transpose(2, 3), v,
                             self.attention_bias(h * w, H * W), self.scale)
        out = out.transpose(2, 3).reshape(B, self.dh, h, w) + v_local
        return self.proj(out)


class Mlp(nn.Module):
    """fc1 (1×1) → BN → act → depthwise 3×3 → BN → act → fc2 (1×1) → BN.

    Shapes: (B, C, H, W) → (B, C, H, W).
    """

    def __init__(self, dim: int, hidden_dim: int, norm_cfg: ConfigType,
                 act_cfg: ConfigType):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = build_activation_layer(act_cfg)
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)
        for conv in (self.fc1, self.fc2):
            trunc_normal_(conv.weight, std=.02)
            nn.init.zeros_(conv.bias)
        self.mid = nn.Conv2d(
            hidden_dim, hidden_dim, 3, 1, 1, groups=hidden_dim)
        self.mid_norm = build_norm_layer(norm_cfg, hidden_dim)[1]
        self.norm1 = build_norm_layer(norm_cfg, hidden_dim)[1]
        self.norm2 = build_norm_layer(norm_cfg, dim)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.fc1(x)))
        x = self.act(self.mid_norm(self.mid(x)))
        return self.norm2(self.fc2(x))


class FFN(nn.Module):
    """x + drop_path(layer_scale_2 · Mlp(x)). Shapes: (B, C, H, W) kept."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float,
                 layer_scale_init: float, norm_cfg: ConfigType,
                 act_cfg: ConfigType):
        super().__init__()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), norm_cfg, act_cfg)
        self.drop_path = DropPath(drop_path) if drop_path > 0 \
            else nn.Identity()
        self.layer_scale_2 = nn.Parameter(
            torch.full((dim, 1, 1), layer_scale_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


class AttnFFN(nn.Module):
    """x + ls1 · Attention4D(x), then + ls2 · Mlp(·), each with drop_path.

    Shapes: (B, C, H, W) kept.
    """

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float,
                 layer_scale_init: float, resolution: int,
                 stride: Optional[int], norm_cfg: ConfigType,
                 act_cfg: ConfigType):
        super().__init__()
        self.token_mixer = Attention4D(
            dim, resolution, stride=stride, norm_cfg=norm_cfg,
            act_cfg=act_cfg)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), norm_cfg, act_cfg)
        self.drop_path = DropPath(drop_path) if drop_path > 0 \
            else nn.Identity()
        self.layer_scale_1 = nn.Parameter(
            torch.full((dim, 1, 1), layer_scale_init))
        self.layer_scale_2 = nn.Parameter(
            torch.full((dim, 1, 1), layer_scale_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1 * self.token_mixer(x))
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


class ConvDownsample(nn.Module):
    """3×3 stride-2 conv + BN. Shapes: (B, C, H, W) → (B, C', ⌈H/2⌉, ⌈W/2⌉)."""

    def __init__(self, in_dim: int, out_dim: int, norm_cfg: ConfigType):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, 3, 2, 1)
        self.norm = build_norm_layer(norm_cfg, out_dim)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class AttentionDownsample(nn.Module):
    """Attention4DDownsample(x) + BN(3×3 stride-2 conv(x)).

    Shapes: (B, C, H, W) → (B, C', ⌈H/2⌉, ⌈W/2⌉).
    """

    def __init__(self, in_dim: int, out_dim: int, resolution: int,
                 norm_cfg: ConfigType, act_cfg: ConfigType):
        super().__init__()
        self.attn = Attention4DDownsample(
            in_dim, out_dim, resolution, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.conv = nn.Conv2d(in_dim, out_dim, 3, 2, 1)
        self.bn = build_norm_layer(norm_cfg, out_dim)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x) + self.bn(self.conv(x))


@MODELS.register_module()
class EfficientFormerV2(BaseModule):
    """EfficientFormerV2 feature extractor (strides 4, 8, 16, 32).

    Args:
        arch: 's0', 's1', 's2' or 'l' (CGRSeg-T/B/L use s1/s2/l).
        out_indices: stages whose outputs are returned (0..3).
        resolution: input size the attention-bias tables are laid out for;
            other sizes resize the biases bicubically. Checkpoints fix it
            (the CGRSeg ones use 512).
        drop_path_rate: stochastic depth, growing linearly over all blocks;
            ``None`` takes the size's default (0 / 0 / 0.02 / 0.1).
        layer_scale_init: initial value of the residual layer scales.
        norm_cfg: every BN of the backbone.
        act_cfg: activation of stem, MLPs and attention projections.
        norm_eval: keep BNs in eval mode during training (frozen statistics);
            the released models were trained with ``False``
            (docs/porting.md Q16).
        init_cfg: ``dict(type='Pretrained', checkpoint=...)`` loads ImageNet
            weights (EfficientFormerV2 release or timm format, see
            :func:`load_pretrained_backbone`), listing any key that does not
            fit.

    Input (B, 3, H, W) → tuple of (B, C_i, ⌈H/2^(i+2)⌉, ⌈W/2^(i+2)⌉).
    """

    def __init__(self,
                 arch: str = 's1',
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 resolution: int = 512,
                 drop_path_rate: Optional[float] = None,
                 layer_scale_init: float = 1e-5,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = dict(type='GELU'),
                 norm_eval: bool = False,
                 init_cfg: OptConfigType = None):
        super().__init__(init_cfg=init_cfg)
        if arch not in ARCH_SETTINGS:
            raise ValueError(
                f'EfficientFormerV2: unknown arch {arch!r}; choose one of '
                f'{sorted(ARCH_SETTINGS)} (CGRSeg-T/B/L use s1/s2/l).')
        if any(i not in range(4) for i in out_indices):
            raise ValueError(f'EfficientFormerV2: out_indices must be stage '
                             f'indices in 0..3, got {tuple(out_indices)}.')
        setting = ARCH_SETTINGS[arch]
        self.arch = arch
        self.out_indices = tuple(out_indices)
        self.norm_eval = norm_eval
        widths, depths = setting['widths'], setting['depths']
        if drop_path_rate is None:
            drop_path_rate = setting['drop_path_rate']
        self.embed_dims = widths

        self.patch_embed = nn.Sequential(
            nn.Conv2d(3, widths[0] // 2, 3, 2, 1),
            build_norm_layer(norm_cfg, widths[0] // 2)[1],
            build_activation_layer(act_cfg),
            nn.Conv2d(widths[0] // 2, widths[0], 3, 2, 1),
            build_norm_layer(norm_cfg, widths[0])[1],
            build_activation_layer(act_cfg))

        total_blocks = sum(depths)
        network: List[nn.Module] = []
        for stage, (width, depth) in enumerate(zip(widths, depths)):
            stage_res = math.ceil(resolution / 2**(stage + 2))
            first_attention = depth - setting['num_attention_blocks']
            blocks = []
            for i in range(depth):
                block_index = sum(depths[:stage]) + i
                common = dict(
                    dim=width,
                    mlp_ratio=setting['mlp_ratios'][stage][i],
                    drop_path=drop_path_rate * block_index /
                    (total_blocks - 1),
                    layer_scale_init=layer_scale_init,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg)
                if stage >= 2 and i >= first_attention:
                    blocks.append(
                        AttnFFN(
                            resolution=stage_res,
                            stride=2 if stage == 2 else None,
                            **common))
                else:
                    blocks.append(FFN(**common))
            network.append(nn.Sequential(*blocks))
            if stage == 3:
                break
            if stage >= 2:
                network.append(
                    AttentionDownsample(width, widths[stage + 1], stage_res,
                                        norm_cfg, act_cfg))
            else:
                network.append(
                    ConvDownsample(width, widths[stage + 1], norm_cfg))
        self.network = nn.ModuleList(network)

    def init_weights(self) -> None:
        if self.init_cfg is not None and self.init_cfg.get(
                'type') == 'Pretrained':
            load_pretrained_backbone(self, self.init_cfg['checkpoint'])
            self._is_init = True
        else:
            super().init_weights()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f'EfficientFormerV2 expects a (B, 3, H, W) image batch, got '
                f'shape {tuple(x.shape)}. Pass RGB images through the '
                f'data preprocessor (SegDataPreProcessor) first.')
        if torch.compiler.is_dynamo_compiling():
            # no ContextVar under Dynamo, which dedupes the graph itself
            return self._forward_stages(x)
        with cubic_taps_shared():
            return self._forward_stages(x)

    def _forward_stages(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.patch_embed(x)
        outs = []
        for stage in range(4):
            x = self.network[2 * stage](x)
            if stage in self.out_indices:
                outs.append(x)
            if stage < 3:
                x = self.network[2 * stage + 1](x)
        return tuple(outs)

    def train(self, mode: bool = True) -> 'EfficientFormerV2':
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
