"""CUDA conditions emulated on the CPU for the tests that stand in for a
GPU (docs/gpu.md): CUDA's fp16 autocast (its float32 op list) and a
recorder of tensors created off the model's device (the 'meta' device)."""
from contextlib import contextmanager
from typing import Iterator, List

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

# Ops that CUDA autocast runs in float32 (ATen's autocast_mode.h,
# AT_FORALL_FP32 and AT_FORALL_FP32_SET_OPT_DTYPE); CPU autocast leaves
# most of them in the input's dtype, e.g. softmax, sum, layer_norm and
# upsample_bilinear2d. cross_entropy is log_softmax + nll_loss.
CUDA_FP32_OPS = (
    'acos', 'asin', 'cosh', 'erfinv', 'exp', 'expm1', 'log', 'log10', 'log2',
    'log1p', 'reciprocal', 'rsqrt', 'sinh', 'tan', 'pow', 'softplus',
    'layer_norm', 'native_layer_norm', 'group_norm', 'frobenius_norm',
    'nuclear_norm', 'cosine_similarity', 'poisson_nll_loss',
    'cosine_embedding_loss', 'nll_loss', 'nll_loss2d', 'hinge_embedding_loss',
    'kl_div', 'l1_loss', 'smooth_l1_loss', 'huber_loss', 'mse_loss',
    'margin_ranking_loss', 'multilabel_margin_loss', 'soft_margin_loss',
    'triplet_margin_loss', 'multi_margin_loss',
    'binary_cross_entropy_with_logits', 'dist', 'pdist', 'cdist', 'renorm',
    'logsumexp', 'upsample_nearest1d', '_upsample_nearest_exact1d',
    'upsample_nearest2d', '_upsample_nearest_exact2d', 'upsample_nearest3d',
    '_upsample_nearest_exact3d', 'upsample_linear1d', 'upsample_bilinear2d',
    '_upsample_bilinear2d_aa', 'upsample_trilinear3d', 'upsample_bicubic2d',
    '_upsample_bicubic2d_aa', 'prod', 'softmax', 'log_softmax', 'cumprod',
    'cumsum', 'linalg_vector_norm', 'linalg_matrix_norm', 'sum')


def _registered(qualname: str, key: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(qualname, key)
    except RuntimeError:  # an overload defined in Python only
        return False


def emulated_overloads() -> List[str]:
    """The overloads of :data:`CUDA_FP32_OPS` that CUDA autocast handles
    (a kernel for AutocastCUDA) and CPU autocast does not."""
    names = []
    for name in CUDA_FP32_OPS:
        packet = getattr(torch.ops.aten, name)
        for overload in packet.overloads():
            qualname = f'aten::{name}' + (
                '' if overload == 'default' else f'.{overload}')
            if _registered(qualname, 'AutocastCUDA') and not _registered(
                    qualname, 'AutocastCPU'):
                names.append(f'{name}.{overload}')
    return names


def _to_float32(value):
    if isinstance(value, torch.Tensor) and value.dtype in (torch.float16,
                                                           torch.bfloat16):
        return value.float()
    return value


@contextmanager
def cuda_autocast_on_cpu(dtype: torch.dtype = torch.float16) -> Iterator:
    """CPU autocast to ``dtype`` with CUDA's float32 policy: the ops of
    :data:`CUDA_FP32_OPS` get an AutocastCPU kernel (above autograd, as
    CUDA's) that casts their half inputs to float32, as CUDA autocast
    does. Matmuls and convolutions run in ``dtype`` on both."""
    library = torch.library.Library('aten', 'IMPL')

    def fp32_kernel(op):

        def kernel(*args, **kwargs):
            with torch.autocast('cpu', enabled=False):
                return op(*tree_map(_to_float32, args),
                          **tree_map(_to_float32, kwargs))

        return kernel

    try:
        for name in emulated_overloads():
            packet, overload = name.split('.')
            op = getattr(getattr(torch.ops.aten, packet), overload)
            library.impl(name if overload != 'default' else packet,
                         fp32_kernel(op), 'AutocastCPU')
        with torch.autocast('cpu', dtype=dtype):
            yield
    finally:
        library._destroy()


class OffDeviceRecorder(TorchFunctionMode):
    """Fails on the first torch call that returns a tensor off ``device``
    (e.g. ``torch.arange`` without ``device=``: on a GPU a host tensor, a
    copy or a device error; on 'meta' a real CPU tensor)."""

    def __init__(self, device: str = 'meta') -> None:
        super().__init__()
        self.device = torch.device(device)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and \
                    value.device != self.device:
                raise AssertionError(
                    f'{getattr(func, "__qualname__", func)} made a tensor '
                    f'on {value.device}, not {self.device}')
        return out
