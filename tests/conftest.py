import pytest
import torch
from e2e import DEMO_CONFIG, documented, run
from reference import rule_weights


@pytest.fixture(autouse=True)
def _two_threads():
    """The fixtures were recorded with 2 threads; pin it for comparable noise."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope='session')
def demo_checkpoint(tmp_path_factory) -> str:
    """The demo config's segmentor with the rule weights, as a checkpoint."""
    from cgrseg.apis import init_segmentor
    segmentor = init_segmentor(DEMO_CONFIG)
    path = str(tmp_path_factory.mktemp('ckpt') / 'demo.pth')
    torch.save(
        dict(
            state_dict=rule_weights(segmentor),
            meta=dict(dataset_meta=segmentor.dataset_meta)), path)
    return path


@pytest.fixture(scope='session')
def demo_onnx(tmp_path_factory, demo_checkpoint) -> tuple:
    """(file, tool output) of docs/deployment.md's export command on
    ``demo_checkpoint``: any size, both outputs. Exported once for the
    deployment and browser tests (about a minute)."""
    path = str(tmp_path_factory.mktemp('onnx') / 'shapes.onnx')
    proc = run(documented(
        'docs/deployment.md', 'python tools/deployment/pytorch2onnx.py c', {
            'work_dirs/cgrseg_efficientformerv2-s1_1xb8-adamw-300iter_'
            'shapes-128x128/iter_300.pth': demo_checkpoint,
            'work_dirs/shapes.onnx': path}))
    return path, proc.stdout
