"""Stops training cleanly on SIGTERM (e.g. a preempted or cancelled slurm
job): the current iteration finishes, a checkpoint is saved, and
``--resume`` continues from it."""
import signal
from typing import Optional, Sequence

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop
from mmseg.registry import HOOKS


@HOOKS.register_module()
class SignalStopHook(Hook):
    """On one of ``signals`` (default SIGTERM), training stops after the
    current iteration: the :class:`~mmengine.hooks.CheckpointHook` saves a
    checkpoint for it (unless it has just saved one), ``last_checkpoint``
    points to it, and ``runner.train()`` returns. ``tools/train.py`` then
    exits with status 128 + the signal number (143 for SIGTERM), as a
    process ended by that signal would, so that ``train && test`` does not
    go on; ``--resume`` continues the run.

    A second signal stops at once (the default action); a checkpoint being
    written then is lost, not left truncated (the configs write checkpoints
    atomically). In distributed training all ranks stop after the same
    iteration. Only iteration-based loops stop early: MMEngine resumes
    epoch-based loops at an epoch boundary, so there the signal keeps its
    default action.
    """

    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW) has saved

    def __init__(self, signals: Sequence[str] = ('SIGTERM', )) -> None:
        self.signals = [signal.Signals[name] for name in signals]
        self.received: Optional[signal.Signals] = None
        self._previous: dict = {}

    def _handle(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum)
        for sig in self.signals:  # a second signal stops at once
            signal.signal(sig, signal.SIG_DFL)

    def before_train(self, runner) -> None:
        if not isinstance(runner.train_loop, IterBasedTrainLoop):
            print_log(
                f'SignalStopHook: {type(runner.train_loop).__name__} is not '
                f'iteration-based; {", ".join(s.name for s in self.signals)}'
                f' keeps its default action.', logger='current', level=30)
            return
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def after_train(self, runner) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _stop_requested(self) -> bool:
        """Whether any rank received a signal."""
        if get_world_size() == 1:
            return self.received is not None
        flag = torch.tensor([float(self.received is not None)])
        all_reduce(flag, op='max')  # on the backend's device
        return bool(flag.item())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not self._previous or not self._stop_requested():
            return
        done = runner.iter + 1
        runner.train_loop.stop_training = True
        name = self.received.name if self.received else \
            'a signal to another rank'
        checkpoint_hook = next(
            (h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
        if checkpoint_hook is None:
            print_log(f'{name}: training stopped after iteration {done} '
                      f'without a checkpoint: the config has no '
                      f'CheckpointHook.',
                      logger='current', level=30)
            return
        path = checkpoint_hook.file_backend.join_path(
            checkpoint_hook.out_dir,
            checkpoint_hook.filename_tmpl.format(done))
        if runner.message_hub.get_info('last_ckpt') != path:
            # CheckpointHook's own saving (file name, backend, kept
            # checkpoints, last_checkpoint); it has no public method for it.
            checkpoint_hook._save_checkpoint(runner)
        print_log(f'{name}: training stopped after iteration {done} of '
                  f'{runner.max_iters}, checkpoint {path}. Continue with '
                  f'tools/train.py ... --resume.', logger='current',
                  level=30)


def signal_exit_status(runner) -> int:
    """128 + the signal that stopped training through a
    :class:`SignalStopHook`, else 0."""
    for hook in runner.hooks:
        if isinstance(hook, SignalStopHook) and hook.received is not None:
            return 128 + int(hook.received)
    return 0
