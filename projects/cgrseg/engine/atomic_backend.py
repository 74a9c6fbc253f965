"""A local file backend whose writes are atomic, for checkpoints.

MMEngine's ``LocalBackend`` writes a checkpoint straight to its final name,
so a process killed (or a disk filling up) during the write leaves a
truncated ``iter_N.pth``. :class:`AtomicLocalBackend` writes to
``<name>.tmp`` in the same folder, flushes it to disk and renames it over
the final name, so ``iter_N.pth`` is either complete or absent. The
configs select it with ``default_hooks.checkpoint.backend_args =
dict(backend='local_atomic')`` (MMEngine's ``CheckpointHook`` passes
``backend_args`` on to ``save_checkpoint``)."""
import os
import os.path as osp
from pathlib import Path
from typing import Union

import mmengine
from mmengine.fileio import LocalBackend, register_backend


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; nothing was left under its name."""


def _fsync_dir(folder: str) -> None:
    """Makes a rename in ``folder`` durable (a no-op where folders cannot be
    opened, e.g. on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@register_backend('local_atomic')
class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` whose ``put`` and ``put_text`` replace the target
    atomically. A write that fails (e.g. ``ENOSPC``) raises
    :class:`CheckpointWriteError` naming the file and the cause, removes the
    temporary file and leaves the previous files untouched; a process killed
    during the write leaves at most ``<name>.tmp``, which the next write of
    that name replaces."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        write_atomically(obj, str(filepath))

    def put_text(self, obj: str, filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
        write_atomically(obj.encode(encoding), str(filepath))


def write_atomically(data: bytes, filepath: str) -> None:
    """Replaces ``filepath`` by ``data`` atomically: written to
    ``<filepath>.tmp``, flushed to disk, renamed. Raises
    :class:`CheckpointWriteError` (the temporary file removed, ``filepath``
    untouched) if the write fails."""
    folder = osp.dirname(osp.abspath(filepath))
    mmengine.mkdir_or_exist(folder)
    tmp = filepath + '.tmp'
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except OSError as err:
        if osp.lexists(tmp):
            os.remove(tmp)
        raise CheckpointWriteError(
            err.errno,
            f'could not write {filepath}: {err.strerror or err}. '
            f'Nothing was written under that name and earlier files in '
            f'{folder} are intact; free space there (or choose another '
            f'--work-dir) and continue with --resume') from err
    _fsync_dir(folder)
