import json
import os
import re
import warnings
from pathlib import Path
from typing import Callable

import pytest
import torch
from e2e import DEMO_CONFIG, documented, run
from filelock import FileLock
from reference import rule_weights

# Warnings of the libraries that the tests cannot avoid and a user cannot act
# on, beside the ones the tools drop (LIBRARY_WARNINGS): the ADE20K-style
# configs keep mmseg's reduce_zero_label, the console tests turn drawing
# off, and torch 2.13 deprecates torch.jit.script, which its own
# torch.distributed.optim calls when MMEngine imports it (Python shows no
# DeprecationWarning raised inside a library to a user's script). The
# project's own warnings stay visible in the summary.
TEST_LIBRARY_WARNINGS = (
    '`torch.jit.script` is deprecated',
    '`torch.jit.interface` is deprecated',
    '`reduce_zero_label` will be deprecated',
    'The draw is False, it means that the hook for visualization',
)


def pytest_configure(config: pytest.Config) -> None:
    # cgrseg is imported here, not at the top: importing it raises some of
    # these, and filters added to the configuration apply from the next
    # test on, so each is also set for the rest of this configuration step.
    for notice in TEST_LIBRARY_WARNINGS:
        _ignore(config, notice)
    from cgrseg.engine.library_notices import LIBRARY_WARNINGS
    for notice in LIBRARY_WARNINGS:
        _ignore(config, notice)


# Seconds of each file's slowest tests (the 80 slowest of a full run, idle
# 2-vCPU AMD EPYC, `-n 2`; files not listed take a few seconds).
# pytest-xdist hands whole files to whichever worker asks next (`--dist
# loadfile`); in collection order (setup.cfg turns off xdist's own, by
# number of tests) the longest go first and the short ones fill the gaps
# at the end, instead of a long file starting last while the other worker
# idles.
FILE_SECONDS = {
    'test_deploy.py': 230,
    'test_train_tools.py': 214,
    'test_faults.py': 188,
    'test_export_blockwise.py': 157,
    'test_own_data.py': 104,
    'test_analysis_tools.py': 80,
    'test_distill.py': 75,
    'test_checkpoint_urls.py': 67,
    'test_multi_gpu.py': 36,
    'test_web_demo.py': 30,
    'test_cuda_emulation.py': 16,
    'test_blockwise_attention.py': 15,
    'test_converters.py': 9,
}


def pytest_collection_modifyitems(items: list) -> None:
    # stable: a file's tests keep their order
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))


def _ignore(config: pytest.Config, notice: str) -> None:
    warnings.filterwarnings('ignore', message=re.escape(notice))
    config.addinivalue_line('filterwarnings', f'ignore:{re.escape(notice)}')


def _threads() -> int:
    """2 threads in one process (the fixtures were recorded with 2); 1 per
    worker under pytest-xdist (`-n 2` in setup.cfg), whose workers share the
    2 cores of the machines the suite is sized for. The parity tests pass at
    their tolerances with 1 and with 2 threads."""
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    return max(1, 2 // workers)


@pytest.fixture(autouse=True)
def _pinned_threads():
    """A fixed thread count per test, for comparable float noise."""
    previous = torch.get_num_threads()
    torch.set_num_threads(_threads())
    yield
    torch.set_num_threads(previous)


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str,
              make: Callable[[Path], dict]) -> dict:
    """``make(folder)``'s result for this test session, made by whichever
    pytest-xdist worker asks first (the others wait on a file lock and read
    it): an expensive artefact (an export) is made once, not once per
    worker. ``make`` writes its files into ``folder`` and returns a
    JSON-serialisable dict."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'):
        root = root.parent  # shared by the workers of one session
    folder = root / f'made_once_{name}'
    result = folder / 'result.json'
    with FileLock(str(folder) + '.lock'):
        if not result.exists():
            folder.mkdir(exist_ok=True)
            result.write_text(json.dumps(make(folder)))
    return json.loads(result.read_text())


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
    deployment and browser tests (about a minute), whichever worker
    runs them."""

    def export(folder: Path) -> dict:
        path = str(folder / 'shapes.onnx')
        proc = run(documented(
            'docs/deployment.md', 'python tools/deployment/pytorch2onnx.py c',
            {
                'work_dirs/cgrseg_efficientformerv2-s1_1xb8-adamw-300iter_'
                'shapes-128x128/iter_300.pth': demo_checkpoint,
                'work_dirs/shapes.onnx': path
            }))
        return dict(path=path, stdout=proc.stdout)

    made = made_once(tmp_path_factory, 'demo_onnx', export)
    return made['path'], made['stdout']
