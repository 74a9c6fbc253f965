"""ONNX files of the blockwise attentions (blockwise_attention.py): ONNX
Runtime against eager PyTorch for fixed-size and dynamic-size files, with
blocks so small that every attention splits into several (the last one
ragged), and the dynamic labels-only export of a padded config."""
import pytest
import torch
from e2e import DEMO_CONFIG, python, run
from reference import rule_weights

from cgrseg.apis import init_segmentor
from cgrseg.deploy import DeploySegmentor
from cgrseg.deploy.onnx_export import (compare_with_pytorch, export_onnx,
                                       onnx_session)
from cgrseg.models.backbones import blockwise_attention

EXPORT = 'tools/deployment/pytorch2onnx.py'
# Not multiples of 32 (padding inside the graph); all resize the biases of
# the demo config's 128x128 tables, none is the export size's half.
SIZES = [(200, 264), (137, 95), (171, 229)]


@pytest.fixture(scope='module')
def demo_segmentor():
    segmentor = init_segmentor(DEMO_CONFIG)
    segmentor.load_state_dict(rule_weights(segmentor))
    return segmentor.eval()


@pytest.fixture
def small_blocks(monkeypatch):
    """A few query rows per block: 8 to 30 blocks per attention."""
    monkeypatch.setattr(blockwise_attention, 'BLOCK_ELEMENTS', 1 << 13)
    monkeypatch.setattr(blockwise_attention, 'TRACED_BLOCK_ROWS', 5)


@pytest.mark.e2e
@pytest.mark.parametrize('dynamic', [False, True])
def test_onnx_runtime_matches_pytorch_with_many_blocks(
        demo_segmentor, small_blocks, tmp_path, dynamic):
    model = DeploySegmentor(demo_segmentor)
    path = str(tmp_path / 'model.onnx')
    export_onnx(model, path, SIZES[0], dynamic_shape=dynamic)
    session = onnx_session(path)
    for size in SIZES if dynamic else SIZES[:1]:
        images = torch.rand(
            2, 3, *size, generator=torch.Generator().manual_seed(1)) * 255
        result = compare_with_pytorch(model, session, images)
        assert result['logits_rel_err'] < 1e-5, size
        assert result['label_agreement'] >= 0.9999, size


@pytest.mark.e2e
def test_dynamic_labels_only_export_of_a_padded_config(demo_checkpoint,
                                                       tmp_path):
    """The README's command: labels without logits (the cell-wise labels
    path of a config that pads to multiples of 32), any size. The tool
    compares ONNX Runtime with PyTorch at three sizes."""
    proc = run(python(EXPORT, DEMO_CONFIG, demo_checkpoint, '--out',
                      str(tmp_path / 'labels.onnx'), '--dynamic-shape',
                      '--shape', '160', '224', '--output', 'labels'))
    lines = [line for line in proc.stdout.splitlines()
             if line.startswith('ONNX Runtime vs PyTorch')]
    assert len(lines) == 3, proc.stdout + proc.stderr
    assert all('label_agreement 1' in line for line in lines), lines
