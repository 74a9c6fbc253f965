"""Several GPUs and ranks, emulated on the CPU: torch.cuda's generator
bookkeeping mocked for 1, 2 and 4 visible devices, and a 2-process gloo
run for the per-rank RNG states of a resumed run."""
import json
import os
import os.path as osp
import random
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from e2e import DEMO_CONFIG, REPO, tiny_schedule

from cgrseg.engine.hooks import rng_state_hook
from cgrseg.engine.hooks.rng_state_hook import (RNGStateHook,
                                                capture_rng_state,
                                                restore_rng_state)


class FakeCUDAGenerators:
    """torch.cuda's RNG functions over ``count`` fake devices, device i's
    state a tensor of i's; an index past the visible devices raises as
    torch's does (``IndexError``)."""

    def __init__(self, monkeypatch, count: int) -> None:
        self.reset(count)
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
        monkeypatch.setattr(torch.cuda, 'device_count', lambda: self.count)
        monkeypatch.setattr(torch.cuda, 'get_rng_state_all',
                            lambda: [s.clone() for s in self.states])
        # set_rng_state_all calls torch.cuda.random's set_rng_state
        for module in (torch.cuda, torch.cuda.random):
            monkeypatch.setattr(module, 'set_rng_state', self.set_rng_state)

    def reset(self, count: int) -> None:
        self.count = count
        self.states = [torch.full((16, ), 100 + i, dtype=torch.uint8)
                       for i in range(count)]

    def set_rng_state(self, state: torch.Tensor, device=0) -> None:
        self.states[int(device)] = state.clone()  # IndexError past count


@pytest.mark.parametrize('saved,visible', [(1, 1), (2, 2), (2, 1), (4, 4),
                                           (4, 2), (4, 1)])
def test_cuda_rng_states_resume_on_fewer_visible_gpus(monkeypatch, saved,
                                                      visible):
    cuda = FakeCUDAGenerators(monkeypatch, saved)
    cuda.states = [torch.full((16, ), i, dtype=torch.uint8)
                   for i in range(saved)]
    state = capture_rng_state()
    assert len(state['cuda']) == saved
    cuda.reset(visible)
    restore_rng_state(state)
    assert [s[0].item() for s in cuda.states] == list(range(visible))


def test_each_rank_resumes_its_own_rng_state(monkeypatch):
    """Rank 0 saves the states gathered from every rank; on load each rank
    takes its own (not rank 0's)."""
    states, draws = [], []
    for rank in range(2):
        random.seed(rank), np.random.seed(rank), torch.manual_seed(rank)
        states.append(capture_rng_state())
        draws.append((random.random(), np.random.rand(), torch.rand(1)))
    hook = RNGStateHook()
    monkeypatch.setattr(rng_state_hook, 'gather_object', lambda s: states)
    hook.before_save_checkpoint_on_every_rank(runner=None)
    checkpoint = {}
    hook.before_save_checkpoint(None, checkpoint)
    assert checkpoint['rng_state'] is states
    for rank in (1, 0):
        monkeypatch.setattr(rng_state_hook, 'get_rank', lambda: rank)
        hook.after_load_checkpoint(None, checkpoint)
        torch.manual_seed(99)
        hook.before_train(SimpleNamespace(iter=4))
        assert (random.random(), np.random.rand(),
                torch.rand(1)) == draws[rank]


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    from cgrseg.datasets import generate_shapes
    root = str(tmp_path_factory.mktemp('data') / 'shapes')
    generate_shapes(root)
    return root


@pytest.mark.e2e
def test_every_ddp_rank_resumes_like_its_uninterrupted_twin(
        data_root, tmp_path):
    """2-process DDP (gloo) with ``randomness.diff_rank_seed=True``: 4
    iterations straight, and the same resumed from iteration 2; every rank's
    random draws after the resume equal its twin's (and the ranks' differ)."""
    config = tmp_path / 'rng_probe.py'
    config.write_text(
        f'_base_ = {DEMO_CONFIG!r}\n'
        "custom_imports = dict(imports=['cgrseg', 'helpers.rng_probe'])\n"
        "custom_hooks = _base_.custom_hooks + [dict(type='RNGProbeHook')]\n"
        'randomness = dict(seed=0, diff_rank_seed=True)\n')
    port = 29500 + (os.getpid() + 300) % 1000

    def train(work_dir: str, probe: str, *extra: str) -> dict:
        os.makedirs(probe)
        env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1',
                   CGRSEG_PROBE_DIR=probe, PYTHON=sys.executable,
                   PORT=str(port), PYTHONPATH=os.pathsep.join(
                       [str(REPO / 'tests'), os.environ.get('PYTHONPATH',
                                                            '')]))
        proc = subprocess.run(
            ['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir',
             work_dir, *extra, '--cfg-options',
             *tiny_schedule(data_root, iters=4, interval=2)],
            cwd=str(REPO), env=env, capture_output=True, text=True,
            timeout=600)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        return [json.load(open(osp.join(probe, f'rng{rank}.json')))
                for rank in (0, 1)]

    twin = train(str(tmp_path / 'straight'), str(tmp_path / 'p0'))
    resumed = train(str(tmp_path / 'resumed'), str(tmp_path / 'p1'),
                    '--resume', str(tmp_path / 'straight' / 'iter_2.pth'))
    assert list(resumed[0]) == ['3', '4']
    for rank in (0, 1):
        assert resumed[rank] == {i: twin[rank][i] for i in ('3', '4')}
    assert twin[0] != twin[1]
