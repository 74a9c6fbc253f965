"""tools/analysis_tools/get_flops.py reproduces the paper's complexity.

Paper (ADE20K table, 512x512): 4.0 / 7.6 / 14.9 GFLOPs and 9.4 / 18.1 (a
slip for 19.1, the count of the original code) / 35.7 M parameters for
CGRSeg-T/B/L. The reference run of the original code measured 4.00 / 7.67 /
14.91 GFLOPs with mmcv 1.x's counter and exactly the parameter counts below.
"""

import re

import pytest

from cgrseg.apis import init_segmentor
from e2e import documented, load_script
from reference import CONFIGS, REPO_ROOT

pytestmark = pytest.mark.e2e  # full-size models at 512x512 (a benchmark)

PAPER_GFLOPS = {'t': 4.0, 'b': 7.6, 'l': 14.9}
REFERENCE_GFLOPS = {'t': 3.997, 'b': 7.674, 'l': 14.911}
PARAMS = {
    't': (9_364_647, 5_748_360, 3_616_287),
    'b': (19_114_871, 12_151_408, 6_963_463),
    'l': (35_677_703, 25_578_016, 10_099_687),
}


@pytest.fixture(scope='module')
def get_flops():
    return load_script('tools/analysis_tools/get_flops.py')


@pytest.mark.parametrize('variant', ['t', 'b', 'l'])
def test_paper_complexity_at_512(get_flops, variant):
    model = init_segmentor(str(REPO_ROOT / CONFIGS[variant]))
    result = get_flops.complexity(model, [512, 512])
    total, backbone, head = (result[p] for p in get_flops.PARTS)

    assert (total['params'], backbone['params'], head['params']) == \
        PARAMS[variant]
    paper = total['flops_paper'] / 1e9
    assert paper == pytest.approx(PAPER_GFLOPS[variant], rel=0.02)
    assert paper == pytest.approx(REFERENCE_GFLOPS[variant], rel=0.005)
    assert total['flops_paper'] == \
        backbone['flops_paper'] + head['flops_paper']
    # mmengine's default counts every operator it knows (the attention
    # matmuls among them) but not the convolutions' bias additions.
    ops = total['by_operator']
    assert 'matmul' in ops
    assert total['flops_mmengine'] == sum(ops.values()) - ops['conv_bias']
    assert total['flops_mmengine'] > total['flops_paper'] - ops['conv_bias']


def test_cli_prints_both_conventions(get_flops, capsys, monkeypatch):
    """The model zoo README's command (run in this process)."""
    command = documented('configs/cgrseg/README.md',
                         'python tools/analysis_tools/get_flops.py configs/')
    assert command[1] == 'tools/analysis_tools/get_flops.py'
    monkeypatch.chdir(REPO_ROOT)
    get_flops.main(command[2:])
    out = capsys.readouterr().out
    assert 'input 1x3x512x512' in out
    assert 'GFLOPs, paper' in out and 'GFLOPs, mmengine' in out
    assert re.search(r'^params \(M\) +9\.365 ', out, re.M), out
