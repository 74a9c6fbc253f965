"""Test-only hook: each rank records the model wrapper's class and the
images of every training batch, and after training saves its parameters to
``$CGRSEG_PROBE_DIR/rank{rank}.pt`` and the rest to ``rank{rank}.json``
(outside the work dir), so a test can check that the DDP ranks ran wrapped,
on different samples, and ended identical."""
import json
import os
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


@HOOKS.register_module()
class ParamProbeHook(Hook):

    def __init__(self) -> None:
        self.samples = []

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        self.samples += [osp.basename(sample.img_path)
                         for sample in data_batch['data_samples']]

    def after_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        path = os.path.join(os.environ['CGRSEG_PROBE_DIR'],
                            f'rank{get_rank()}')
        torch.save({k: v.detach().cpu()
                    for k, v in model.state_dict().items()}, path + '.pt')
        with open(path + '.json', 'w') as f:
            json.dump(dict(wrapper=type(runner.model).__name__,
                           samples=self.samples), f)
