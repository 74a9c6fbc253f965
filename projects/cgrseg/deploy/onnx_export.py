"""Export a :class:`DeploySegmentor` to ONNX and check it in ONNX Runtime.

Uses PyTorch's ``torch.export``-based exporter (``dynamo=True``), which
needs ``onnx`` and ``onnxscript``; running needs ``onnxruntime``. All three
come with this project's ``deploy`` extra (``pip install -e '.[deploy]'``).
"""
import importlib
import json
import logging
import warnings
from contextlib import contextmanager
from types import ModuleType
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import torch
from torch.export import Dim

from .segmentor import DeploySegmentor

INPUT_NAME = 'images'
# Smallest side of a dynamic-shape export: below 65 pixels the stride-64
# pooled map of the head has a single cell, which the traced graph does
# not cover.
MIN_DYNAMIC_SIDE = 65
MAX_DYNAMIC_SIDE = 8192


def require(package: str) -> ModuleType:
    """Import an optional deployment dependency, or say how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise ImportError(
            f'{package} is not installed; ONNX export and ONNX Runtime need '
            f"this project's deploy extra: pip install -e '.[deploy]' "
            f'(onnx, onnxscript, onnxruntime; tools/setup_env.sh installs '
            f'it).') from None


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the exporter's notices about its own internals: torchvision ops
    it cannot register (the segmentors use none), pytree deprecations and
    the graph optimizer's constant-folding remarks."""
    loggers = [logging.getLogger(n) for n in ('torch.onnx', 'onnxscript')]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', category=FutureWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_onnx(model: DeploySegmentor,
                path: str,
                shape: Tuple[int, int],
                dynamic_shape: bool = False,
                opset: Optional[int] = None,
                metadata: Optional[Dict[str, object]] = None) -> None:
    """Write ``model`` as an ONNX file with input ``images`` (N, 3, H, W).

    The batch size is always free. With ``dynamic_shape`` so are H and W
    (from 65 to 8192 pixels each); otherwise the file accepts ``shape``
    only. ``metadata`` entries are stored JSON-encoded in the model's
    metadata properties, beside ``outputs`` and ``input_shape``.
    """
    onnx = require('onnx')
    require('onnxscript')
    example = torch.rand(2, 3, *shape) * 255
    dims = {0: Dim('batch', min=1, max=1024)}
    if dynamic_shape:
        dims.update({
            2: Dim('height', min=MIN_DYNAMIC_SIDE, max=MAX_DYNAMIC_SIDE),
            3: Dim('width', min=MIN_DYNAMIC_SIDE, max=MAX_DYNAMIC_SIDE)
        })
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            model.eval(), (example, ),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(model.outputs),
            dynamic_shapes={INPUT_NAME: dims},
            opset_version=opset,
            external_data=False,
            verbose=False)
    proto = program.model_proto
    entries = dict(metadata or {})
    entries['outputs'] = list(model.outputs)
    entries['input_shape'] = 'dynamic' if dynamic_shape else list(shape)
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)


def onnx_metadata(session) -> Dict[str, object]:
    """The JSON metadata that :func:`export_onnx` stored."""
    props = session.get_modelmeta().custom_metadata_map
    return {key: json.loads(value) for key, value in props.items()}


def onnx_session(path: str, threads: Optional[int] = None):
    """An ONNX Runtime CPU session for ``path``.

    Memory patterns are off: ONNX Runtime then allocates each activation
    when it is needed instead of planning one block for all of them from
    the first call, which at large sizes holds far more (CGRSeg-T, 2048²:
    +1432 against +755 MiB at its peak) at the same speed (docs/
    deployment.md)."""
    ort = require('onnxruntime')
    options = ort.SessionOptions()
    options.enable_mem_pattern = False
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(
        path, options, providers=['CPUExecutionProvider'])


def compare_with_pytorch(model: DeploySegmentor, session,
                         images: torch.Tensor) -> Dict[str, float]:
    """Run PyTorch and ONNX Runtime on ``images``; return the max relative
    logits error (max |Δ| / max |logits|) and the fraction of identical
    labels, for the outputs the file has."""
    with torch.no_grad():
        expected = model(images)
    names = [output.name for output in session.get_outputs()]
    got = dict(zip(names, session.run(None, {INPUT_NAME: images.numpy()})))
    result = {}
    if 'logits' in got:
        ref = expected['logits'].numpy()
        result['logits_rel_err'] = float(
            np.abs(got['logits'] - ref).max() / np.abs(ref).max())
    if 'labels' in got:
        result['label_agreement'] = float(
            (got['labels'] == expected['labels'].numpy()).mean())
    return result
