"""Test-only hook: after training, each rank saves its parameters to
``$CGRSEG_PROBE_DIR/rank{rank}.pt`` (outside the work dir), so a test can
check that DDP ranks ended identical."""
import os

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


@HOOKS.register_module()
class ParamProbeHook(Hook):

    def after_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        path = os.path.join(os.environ['CGRSEG_PROBE_DIR'],
                            f'rank{get_rank()}.pt')
        torch.save({k: v.detach().cpu()
                    for k, v in model.state_dict().items()}, path)
