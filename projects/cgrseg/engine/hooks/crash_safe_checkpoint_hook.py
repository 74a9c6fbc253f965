"""MMEngine's ``CheckpointHook`` with every save ordered so that a process
killed at any moment leaves a complete checkpoint and a ``last_checkpoint``
that points to one."""
import logging
import os
import os.path as osp
from collections import deque
from typing import List, Optional

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from ..atomic_backend import write_atomically


def iteration_meta(runner, step: int) -> dict:
    """The ``meta`` of the checkpoint of iteration ``step`` (1-based), as
    MMEngine's ``CheckpointHook`` builds it in iteration-based training."""
    return dict(epoch=runner.epoch, iter=step)


def write_checkpoint(runner, hook: CheckpointHook, step: int,
                     meta: dict) -> str:
    """Saves the checkpoint of ``step`` as ``hook`` would (its folder, file
    name, backend and options, through ``runner.save_checkpoint``), then
    points ``last_checkpoint`` to it, replacing that file atomically.
    Returns the checkpoint's path."""
    filename = hook.filename_tmpl.format(step)
    path = hook.file_backend.join_path(hook.out_dir, filename)
    runner.message_hub.update_info('last_ckpt', path)
    # MMEngine runs before_save_checkpoint on rank 0 alone (save_checkpoint
    # is master_only): what a checkpoint gathers from every rank (RNG
    # states, RNGStateHook) is collected here, where every rank passes.
    runner.call_hook('before_save_checkpoint_on_every_rank')
    runner.save_checkpoint(
        hook.out_dir,
        filename,
        hook.file_client_args,
        save_optimizer=hook.save_optimizer,
        save_param_scheduler=hook.save_param_scheduler,
        meta=meta,
        by_epoch=hook.by_epoch,
        backend_args=hook.backend_args,
        **hook.args)
    if is_main_process():
        write_atomically(path.encode(),
                         osp.join(runner.work_dir, 'last_checkpoint'))
    return path


@HOOKS.register_module()
class CrashSafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments) whose saves run in the order
    that survives a kill at any moment:

    1. the new checkpoint is written (atomically with
       ``backend_args=dict(backend='local_atomic')``);
    2. ``last_checkpoint`` is replaced atomically to point to it;
    3. only then are checkpoints beyond ``max_keep_ckpts`` deleted;

    and a new best checkpoint (``save_best``) replaces the previous best
    without a moment in which neither file is complete (local folders).

    MMEngine's hook deletes the oldest kept checkpoint before writing the
    new one and writes ``last_checkpoint`` with a plain ``open()``: with
    ``max_keep_ckpts=1`` a kill during the save leaves no complete
    checkpoint, and a kill during the pointer's write an empty pointer.
    """

    def after_val_epoch(self, runner, metrics: dict) -> None:
        # MMEngine's CheckpointHook deletes the previous best checkpoint
        # before it writes the new one, inside its private
        # _save_best_checkpoint (no public step between): a hard link keeps
        # the previous file, as previous_<name>, until the new one is
        # written. A kill in between leaves the link.
        links = self._link_best_checkpoints()
        super().after_val_epoch(runner, metrics)
        for link in links:
            os.remove(link)

    def _link_best_checkpoints(self) -> List[str]:
        """Hard links ``previous_<name>`` to the current best checkpoint
        files (main process, local folders); returns their paths."""
        if not (getattr(self, 'key_indicators', None) and is_main_process()
                and isinstance(self.file_backend, LocalBackend)):
            return []
        # set by CheckpointHook.before_train (absent before training)
        paths = [getattr(self, 'best_ckpt_path', None)] \
            if len(self.key_indicators) == 1 \
            else list(getattr(self, 'best_ckpt_path_dict', {}).values())
        links = []
        for path in paths:
            if path and osp.isfile(path):
                link = osp.join(osp.dirname(path),
                                'previous_' + osp.basename(path))
                if osp.lexists(link):  # left by a run killed there
                    os.remove(link)
                try:
                    os.link(path, link)
                except OSError as err:  # no hard links there
                    print_log(
                        f'could not keep the previous best checkpoint '
                        f'{path} as {link} ({err.strerror or err}): a kill '
                        f'while the new best is written may leave no best '
                        f'checkpoint (MMEngine deletes the old one first).',
                        logger='current', level=logging.WARNING)
                    continue
                links.append(link)
        return links

    def save(self, runner, step: Optional[int] = None) -> str:
        """Saves a checkpoint of training iteration ``step`` (default: the
        current one) now, as at an interval (for :class:`SignalStopHook`).
        Returns its path."""
        step = runner.iter + 1 if step is None else step
        self._save_checkpoint_with_step(runner, step,
                                        iteration_meta(runner, step))
        return self.last_ckpt

    # MMEngine's CheckpointHook writes every regular checkpoint (at an
    # interval, the last, and again after a new best) through this private
    # method, where it deletes before writing; it has no public step between
    # writing and deleting. tests/test_faults.py::
    # test_crash_safe_hook_replaces_mmengines_save fails if that changes.
    def _save_checkpoint_with_step(self, runner, step: int,
                                   meta: dict) -> None:
        dropped = []
        if self.max_keep_ckpts > 0 and (not self.keep_ckpt_ids
                                        or self.keep_ckpt_ids[-1] != step):
            kept = list(self.keep_ckpt_ids) + [step]
            dropped = kept[:-self.max_keep_ckpts]
            self.keep_ckpt_ids = deque(kept[-self.max_keep_ckpts:],
                                       self.max_keep_ckpts)
            # saved in the checkpoint: a resumed run deletes what remains
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        self.last_ckpt = write_checkpoint(runner, self, step, meta)
        if not is_main_process():
            return
        for old in dropped:
            path = self.file_backend.join_path(self.out_dir,
                                               self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
