"""Access to the parity fixtures of the original 0.x CGRSeg (tests/data/reference,
copied from the project's shared reference folder) and the deterministic
weight rule they were generated with."""
import math
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Dict

import torch

REFERENCE_DIR = Path(__file__).parent / 'data' / 'reference'
REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    't': 'configs/cgrseg/cgrseg_efficientformerv2-s1_4xb4-adamw-160k_'
         'ade20k-512x512.py',
    'b': 'configs/cgrseg/cgrseg_efficientformerv2-s2_4xb4-adamw-160k_'
         'ade20k-512x512.py',
    'l': 'configs/cgrseg/cgrseg_efficientformerv2-l_4xb4-adamw-160k_'
         'ade20k-512x512.py',
}


def load_fixture(name: str) -> dict:
    return torch.load(REFERENCE_DIR / name, weights_only=True)


def rule_tensor(key: str, shape) -> torch.Tensor:
    """The fixtures' weight for one float entry: a function of key and shape
    only (one generator per key, seeded with the key's CRC32)."""
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode('utf-8')))
    shape = tuple(shape)
    if key.endswith('running_var'):
        return 0.5 + torch.rand(shape, generator=gen)
    if key.endswith('running_mean'):
        return 0.1 * torch.randn(shape, generator=gen)
    if len(shape) == 4:
        fan_in = math.prod(shape[1:])
        value = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        # The one exception to the generic rule: it sharpens the coarse
        # logits so that the spatial gather and DPG paths are testable.
        return value * 8.0 if key == 'decode_head.conv_seg.weight' else value
    if len(shape) == 2:
        return torch.randn(shape, generator=gen)
    value = 0.1 * torch.randn(shape, generator=gen)
    return value + 1.0 if key.endswith('.weight') else value


def rule_weights(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """``model``'s state dict with :func:`rule_tensor` for every float entry:
    weights whose outputs depend on every layer (unlike the near-identity
    init)."""
    return {
        key: rule_tensor(key, value.shape)
        if value.is_floating_point() else value
        for key, value in model.state_dict().items()
    }


@lru_cache(maxsize=None)
def state_spec(variant: str) -> dict:
    return load_fixture(f'cgrseg_{variant}_state_spec.pt')


def reference_state_dict(variant: str) -> Dict[str, torch.Tensor]:
    """The exact state dict the fixtures of ``variant`` were computed with."""
    spec = state_spec(variant)
    tables = load_fixture('cgrseg_int_tables.pt')['tables']
    state = {}
    for key, shape, dtype in spec['entries']:
        if dtype.startswith('float'):
            state[key] = rule_tensor(key, shape)
            continue
        info = spec['int_buffers'][key]
        if info['kind'] == 'scalar':
            state[key] = torch.tensor(info['value'], dtype=torch.int64)
        elif info['kind'] == 'ones':
            state[key] = torch.ones(tuple(shape), dtype=torch.int64)
        else:
            state[key] = tables[info['table']].long()
    return state


def timm_fixture_state_dict(entries) -> Dict[str, torch.Tensor]:
    """The timm-format weights of tests/data/timm_efficientformerv2_s0.pt for
    its ``(key, shape, dtype)`` entries: :func:`rule_tensor`, but zero
    ImageNet position biases (``attention_biases``, which the segmentation
    backbone discards) and zero batch counters."""
    state = {}
    for key, shape, dtype in entries:
        if not dtype.startswith('torch.float'):
            state[key] = torch.zeros(shape, dtype=getattr(torch, dtype[6:]))
        elif key.endswith('attention_biases'):
            state[key] = torch.zeros(shape)
        else:
            state[key] = rule_tensor(key, shape)
    return state


def build_reference_model(variant: str, **cfg_options):
    """The variant's segmentor built from the shipped config without its
    pretrained checkpoint, SyncBN reverted to BN as MMEngine's single-process
    Runner does (and as the oracle did), the reference weights loaded
    strictly."""
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import cgrseg  # noqa: F401  registers the modules

    cfg = Config.fromfile(str(REPO_ROOT / CONFIGS[variant]))
    cfg.model.backbone.init_cfg = None
    cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.default_scope)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.load_state_dict(reference_state_dict(variant), strict=True)
    return model, cfg


def fixture_input(fixture: dict) -> torch.Tensor:
    info = fixture['input']
    x = torch.randn(
        tuple(info['shape']),
        generator=torch.Generator().manual_seed(info['seed']))
    assert torch.equal(x.flatten()[:8], info['first8'])
    assert math.isclose(x.double().sum().item(), info['sum'], abs_tol=1e-3)
    return x


def upsample_argmax_all_classes(logits: torch.Tensor, factor: int,
                                crop_size) -> torch.Tensor:
    """``cgrseg.deploy.upsample_argmax`` as it was before candidate pruning
    (every class interpolated in every mixed cell): the labels the pruned
    version must reproduce exactly. (N, C, h, w) → (N, *crop_size)."""
    import torch.nn.functional as F

    from cgrseg.deploy.labels import _cell_offset, _cell_weights
    batch, classes, h, w = logits.shape
    padded = F.pad(logits, (1, 1, 1, 1), mode='replicate')
    low = padded.argmax(dim=1)
    top_left = low[:, :-1, :-1]
    mixed = ((top_left != low[:, :-1, 1:]) | (top_left != low[:, 1:, :-1])
             | (top_left != low[:, 1:, 1:]))
    labels = top_left.reshape(-1, 1, 1).expand(-1, factor, factor)
    cell = mixed.reshape(-1).nonzero().squeeze(1)
    cells_per_image = (h + 1) * (w + 1)
    image = cell // cells_per_image
    within = cell - image * cells_per_image
    row = within // (w + 1)
    col = within - row * (w + 1)
    table = padded.permute(0, 2, 3, 1).reshape(-1, classes)
    first = image * ((h + 2) * (w + 2)) + row * (w + 2) + col
    corners = torch.stack([
        table[first], table[first + 1], table[first + w + 2],
        table[first + w + 3]
    ], dim=1)
    weights = _cell_weights(factor, logits)
    exact = torch.stack(
        [(weights[r] @ corners).argmax(dim=-1) for r in range(factor)],
        dim=1)
    labels = labels.index_put((cell, ), exact)
    canvas = labels.reshape(batch, h + 1, w + 1, factor, factor).permute(
        0, 1, 3, 2, 4).reshape(batch, (h + 1) * factor, (w + 1) * factor)
    offset = _cell_offset(factor)
    return canvas.narrow(1, offset, crop_size[0]).narrow(
        2, offset, crop_size[1])


def trained_demo_logits() -> torch.Tensor:
    """(2, 5, 48, 64) float32 logits of a CGRSeg-L trained on the demo data
    (tests/data/make_trained_logits.py): the regions and margins a trained
    model predicts."""
    path = Path(__file__).parent / 'data' / 'trained_demo_logits.pt'
    return torch.load(path).float()


def label_test_logits(kind: str, classes: int, h: int, w: int,
                      seed: int = 0) -> torch.Tensor:
    """(2, classes, h, w) logits for label-stage tests: ``random`` (noise:
    a class boundary in every cell, many candidates), ``smooth`` (smooth
    fields with region boundaries, as a trained model predicts: few
    candidates, mostly two) or ``integer`` (values 0-3: exact ties between
    classes at all four corners, which must go to the lower class)."""
    import torch.nn.functional as F
    gen = torch.Generator().manual_seed(seed)
    if kind == 'random':
        return torch.randn(2, classes, h, w, generator=gen)
    if kind == 'integer':
        return torch.randint(0, 4, (2, classes, h, w), generator=gen).float()
    coarse = 4 * torch.randn(2, classes, h // 6 + 2, w // 6 + 2,
                             generator=gen)
    return F.interpolate(coarse, size=(h, w), mode='bicubic')
