"""Saves every rank's random-number generators with checkpoints so that a
resumed run continues exactly like an uninterrupted one."""
import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import gather_object, get_rank
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS


def capture_rng_state() -> dict:
    """This process's Python, NumPy and torch generator states: the CPU's
    and one per visible CUDA device, as tensors and plain Python values
    (loadable with ``torch.load(weights_only=True)``)."""
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
    """Restores :func:`capture_rng_state`'s ``state``. CUDA generators are
    restored for the devices visible now: a state saved with more visible
    GPUs restores the first ones, the others' states are dropped."""
    random.setstate(state['python'])
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state(
        (kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        visible = state['cuda'][:torch.cuda.device_count()]
        for device, cuda_state in enumerate(visible):
            torch.cuda.set_rng_state(cuda_state, device)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Checkpoints carry every rank's RNG state (``rng_state``: a list indexed
    by rank); resuming restores each rank's own, and validation leaves the
    training RNG untouched.

    MMEngine writes checkpoints on rank 0 only (``before_save_checkpoint``
    runs there alone), so the states are gathered to rank 0 just before,
    when every rank calls ``before_save_checkpoint_on_every_rank``
    (:func:`~.crash_safe_checkpoint_hook.write_checkpoint`, the configs'
    checkpoint hook). Data augmentation runs in dataloader workers, whose
    generators MMEngine seeds deterministically and replays when it skips
    the already-trained iterations on resume; so with ``num_workers > 0``
    (the configs' default) a resumed run reproduces the uninterrupted one
    exactly, on every rank (also with ``randomness.diff_rank_seed=True``).
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._resumed_state: Optional[dict] = None
        self._train_state: Optional[dict] = None
        self._rank_states: Optional[List[dict]] = None

    def _own_state(self) -> dict:
        # during validation the training state it will get back
        return self._train_state or capture_rng_state()

    def before_save_checkpoint_on_every_rank(self, runner) -> None:
        self._rank_states = gather_object(self._own_state())

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # without the gather (another checkpoint hook): rank 0's state only
        checkpoint['rng_state'] = self._rank_states or [self._own_state()]
        self._rank_states = None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        states = checkpoint.get('rng_state')
        if isinstance(states, dict):  # saved before per-rank states
            states = [states]
        rank = get_rank()
        self._resumed_state = None
        if states and rank < len(states):
            self._resumed_state = states[rank]
        elif states:
            print_log(
                f'RNGStateHook: the checkpoint has RNG states for '
                f'{len(states)} rank(s); rank {rank} continues from its '
                f'seed (a resumed run equals an uninterrupted one only with '
                f'the same number of processes).', logger='current',
                level=30)

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
