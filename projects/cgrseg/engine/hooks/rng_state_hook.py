"""Saves the random-number generators with checkpoints so that a resumed run
continues exactly like an uninterrupted one."""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


def capture_rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) generator states, as tensors and
    plain Python values (loadable with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(
        python=random.getstate(),
        numpy=(kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
               cached),
        torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state['python'])
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state(
        (kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Checkpoints carry the main process's RNG state; resuming restores it,
    and validation leaves the training RNG untouched.

    Data augmentation runs in dataloader workers, whose generators MMEngine
    seeds deterministically and replays when it skips the already-trained
    iterations on resume; so with ``num_workers > 0`` (the configs' default)
    a resumed run reproduces the uninterrupted one exactly.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._resumed_state: Optional[dict] = None
        self._train_state: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = capture_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._resumed_state = checkpoint.get('rng_state')

    def before_train(self, runner) -> None:
        if self._resumed_state is not None and runner.iter > 0:
            restore_rng_state(self._resumed_state)
        self._resumed_state = None

    def before_val(self, runner) -> None:
        self._train_state = capture_rng_state()

    def after_val(self, runner) -> None:
        if self._train_state is not None:
            restore_rng_state(self._train_state)
            self._train_state = None
