"""Stops training cleanly on SIGTERM (e.g. a preempted or cancelled slurm
job): the current iteration (or validation iteration) finishes, a
checkpoint is saved, and ``--resume`` continues from it."""
import signal
from typing import Optional, Sequence

import torch
from mmengine.dist import all_reduce, barrier, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop
from mmseg.registry import HOOKS

from .crash_safe_checkpoint_hook import (CrashSafeCheckpointHook,
                                         iteration_meta, write_checkpoint)


class TrainingStopped(Exception):
    """Raised out of ``runner.train()`` by :class:`SignalStopHook` when a
    signal arrived during validation, once the checkpoint is written."""


@HOOKS.register_module()
class SignalStopHook(Hook):
    """On one of ``signals`` (default SIGTERM), training stops after the
    current iteration: the :class:`~mmengine.hooks.CheckpointHook` saves a
    checkpoint for it (unless it has just saved one), ``last_checkpoint``
    points to it, and ``runner.train()`` returns. A signal during the
    validation within training is acted upon after the current validation
    iteration (torchrun and Slurm kill about 30 s after SIGTERM, and an
    ADE20K validation takes minutes): the checkpoint of the last training
    iteration is saved and ``runner.train()`` raises
    :class:`TrainingStopped` (the interrupted validation is not repeated on
    resume). ``tools/train.py`` then
    exits with status 128 + the signal number (143 for SIGTERM), as a
    process ended by that signal would, so that ``train && test`` does not
    go on; ``--resume`` continues the run.

    A second signal stops at once (the default action); a checkpoint being
    written then is lost, not left truncated (the configs write checkpoints
    atomically). In distributed training a signal to any rank stops every
    rank after the same iteration, and all exit with that status once the
    checkpoint is written. Only iteration-based loops stop early: MMEngine resumes
    epoch-based loops at an epoch boundary, so there the signal keeps its
    default action.
    """

    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW) has saved

    def __init__(self, signals: Sequence[str] = ('SIGTERM', )) -> None:
        self.signals = [signal.Signals[name] for name in signals]
        self.received: Optional[signal.Signals] = None  # by this process
        self.stopped_by: Optional[signal.Signals] = None  # by any rank
        self._previous: dict = {}
        self._val_checks = 0  # validation iterations that every rank runs

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

    def _agreed_signal(self) -> Optional[signal.Signals]:
        """The signal that any rank received (the highest number if they
        differ), or None: every rank gets the same answer."""
        number = int(self.received or 0)
        if get_world_size() > 1:
            flag = torch.tensor([float(number)])
            all_reduce(flag, op='max')  # on the backend's device
            number = int(flag.item())
        return signal.Signals(number) if number else None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not self._previous:
            return
        self.stopped_by = self._agreed_signal()
        if self.stopped_by is not None:
            runner.train_loop.stop_training = True
            self._save(runner, runner.iter + 1)

    def before_val(self, runner) -> None:
        # The signal is agreed on at each validation iteration, a collective
        # call: only as many as the rank with the fewest batches runs.
        self._val_checks = 0
        if self._previous:
            count = torch.tensor([float(len(runner.val_loop.dataloader))])
            if get_world_size() > 1:
                all_reduce(count, op='min')
            self._val_checks = int(count.item())

    def after_val_iter(self, runner, batch_idx: int, data_batch=None,
                       outputs=None) -> None:
        # stopped_by: stopped (and saved) at the iteration before; this
        # validation, which MMEngine still runs, may finish
        if batch_idx >= self._val_checks or self.stopped_by is not None:
            return
        self.stopped_by = self._agreed_signal()
        if self.stopped_by is None:
            return
        runner.train_loop.stop_training = True
        self._save(runner, runner.iter)  # runner.iter: the iterations done
        self.after_train(runner)
        raise TrainingStopped(
            f'{self.stopped_by.name} during validation: training stopped '
            f'after iteration {runner.iter}.')

    def _save(self, runner, done: int) -> None:
        """Saves the checkpoint of training iteration ``done`` (unless it
        is the last one saved) and waits until it is written."""
        name = self.stopped_by.name + (
            '' if self.received else ' (sent to another rank)')
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
            if isinstance(checkpoint_hook, CrashSafeCheckpointHook):
                checkpoint_hook.save(runner, done)
            else:  # MMEngine's own: saved with its settings, not pruned
                write_checkpoint(runner, checkpoint_hook, done,
                                 iteration_meta(runner, done))
        barrier()  # no rank exits before the checkpoint is written
        print_log(f'{name}: training stopped after iteration {done} of '
                  f'{runner.max_iters}, checkpoint {path}. Continue with '
                  f'tools/train.py ... --resume.', logger='current',
                  level=30)


def signal_exit_status(runner) -> int:
    """128 + the signal that stopped training through a
    :class:`SignalStopHook`, else 0."""
    for hook in runner.hooks:
        if isinstance(hook, SignalStopHook) and hook.stopped_by is not None:
            return 128 + int(hook.stopped_by)
    return 0
