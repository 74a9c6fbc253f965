"""Test-only hook: after every training iteration each rank draws from its
Python, NumPy and torch generators (what dropout or main-process
augmentation would consume) and after training saves the draws by
iteration to ``$CGRSEG_PROBE_DIR/rng{rank}.json``, so that a test can
compare every rank of a resumed run with its uninterrupted twin."""
import json
import os
import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class RNGProbeHook(Hook):

    def __init__(self) -> None:
        self.draws = {}

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        self.draws[runner.iter + 1] = [
            random.random(), float(np.random.rand()),
            torch.rand(1).item()
        ]

    def after_run(self, runner) -> None:
        path = os.path.join(os.environ['CGRSEG_PROBE_DIR'],
                            f'rng{get_rank()}.json')
        with open(path, 'w') as f:
            json.dump(self.draws, f)
