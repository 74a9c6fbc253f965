"""Parameters and FLOPs of a segmentor (mmengine's FlopAnalyzer).

One FLOP is one multiply-add. The model (backbone + decode head, mmseg 1.x's
'tensor' forward, no final resize) is traced once on a 1x3xHxW input and
counted under two conventions:

* paper: convolution multiply-adds plus their bias additions, nothing else.
  This is what the counter behind the paper's numbers (mmcv 1.x's
  get_model_complexity_info) counted for convolutions, which is all but
  ~0.1 % of what it counted for CGRSeg: it hooked a few module types only,
  never matmuls (attention, spatial gather) nor SyncBN, and the authors'
  backbone and fusion BNs were SyncBN. Reproduces 4.0 / 7.6 / 14.9 GFLOPs
  for CGRSeg-T/B/L at 512x512.
* mmengine: mmengine's default operator handles (fvcore's rules), which
  also count matmuls, batch/layer norms, bilinear upsampling and adaptive
  pooling, but not the bias additions.

    python tools/analysis_tools/get_flops.py CONFIG [--shape 512 512] \\
        [--cfg-options KEY=VALUE ...]
"""
import argparse
import math
from collections import Counter
from typing import Dict, List, Optional

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import (conv_flop_jit, get_shape,
                                           matmul_flop_jit)
from mmengine.config import DictAction

from cgrseg.apis import init_segmentor
from cgrseg.engine.library_notices import library_warnings_ignored

PARTS = ('', 'backbone', 'decode_head')
PAPER_OPS = ('conv', 'conv_bias')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        default=[512, 512],
        help='input size: H W, or one number for a square')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, e.g. '
        'model.decode_head.num_classes=171')
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2):
        parser.error('--shape takes one or two numbers')
    return args


def conv_with_bias_jit(inputs: list, outputs: list) -> Counter:
    """mmengine's convolution count (multiply-adds) and, as ``conv_bias``,
    one addition per output element if the convolution has a bias."""
    counts = conv_flop_jit(inputs, outputs)
    if inputs[2].type().kind() != 'NoneType':
        counts['conv_bias'] = math.prod(get_shape(outputs[0]))
    return counts


def matmul_or_talking_heads_jit(inputs: list, outputs: list) -> Counter:
    """mmengine's matmul count, except for the talking heads of
    EfficientFormerV2's attention, an (h, h) weight times (B, h, M) maps
    (``mix_heads`` in models/backbones/efficientformer_v2.py): a 1x1
    convolution in the original (and in the paper's count), so counted as
    ``conv`` plus its bias addition as ``conv_bias``."""
    left, right = (get_shape(v) for v in inputs)
    if len(left) == 2 and left[0] == left[1] and len(right) == 3 and \
            right[1] == left[1]:
        return Counter(conv=left[0] * math.prod(right),
                       conv_bias=math.prod(right))
    return Counter(matmul=matmul_flop_jit(inputs, outputs))


def complexity(model: torch.nn.Module, shape: List[int]) -> Dict[str, dict]:
    """Parameters and FLOPs of the whole model, the backbone and the decode
    head, for one image of ``shape`` (H, W).

    Returns:
        ``{part: {'params', 'flops_paper', 'flops_mmengine',
        'by_operator'}}`` for part in ``''`` (all), ``'backbone'``,
        ``'decode_head'``.
    """
    inputs = torch.zeros(1, 3, *shape)
    analyzer = FlopAnalyzer(model, (inputs, ))
    analyzer.set_op_handle('aten::_convolution', conv_with_bias_jit)
    analyzer.set_op_handle('aten::matmul', matmul_or_talking_heads_jit)
    analyzer.tracer_warnings('none')
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    params = parameter_count(model)
    result = {}
    with torch.no_grad():
        for part in PARTS:
            ops = analyzer.by_operator(part)
            result[part] = dict(
                params=params[part],
                flops_paper=sum(ops[op] for op in PAPER_OPS),
                flops_mmengine=sum(n for op, n in ops.items()
                                   if op != 'conv_bias'),
                by_operator=dict(ops))
    return result


def format_table(result: Dict[str, dict]) -> str:
    """Params (M) and GFLOPs per convention as a text table."""
    rows = [('', 'total', 'backbone', 'decode_head'),
            ('params (M)', ) + tuple(
                f'{result[p]["params"] / 1e6:.3f}' for p in PARTS),
            ('GFLOPs, paper', ) + tuple(
                f'{result[p]["flops_paper"] / 1e9:.3f}' for p in PARTS),
            ('GFLOPs, mmengine', ) + tuple(
                f'{result[p]["flops_mmengine"] / 1e9:.3f}' for p in PARTS)]
    lines = [f'{r[0]:<18}' + ''.join(f'{c:>13}' for c in r[1:]) for r in rows]
    ops = sorted(result['']['by_operator'].items(), key=lambda kv: -kv[1])
    lines.append('by operator (GFLOPs): ' +
                 ', '.join(f'{op} {n / 1e9:.3f}' for op, n in ops))
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    shape = args.shape * 2 if len(args.shape) == 1 else args.shape
    # Random weights: the counts depend on shapes only.
    model = init_segmentor(args.config, cfg_options=args.cfg_options)
    result = complexity(model, shape)
    print(f'{args.config}\ninput 1x3x{shape[0]}x{shape[1]}\n'
          f'{format_table(result)}\n'
          f'paper = convolution multiply-adds + bias additions (the '
          f'convention of the paper\'s numbers); mmengine = mmengine\'s '
          f'default count (adds matmuls, norms, upsampling, pooling; no '
          f'biases). Neither counts activations, softmax or elementwise '
          f'ops.')


if __name__ == '__main__':
    with library_warnings_ignored():
        main()
