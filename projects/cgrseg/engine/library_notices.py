"""The notices the libraries print about their own internals on every run:
a user of this package can do nothing about them, and they read as if
something were wrong with the run. The tools drop them where the console is
theirs (:func:`library_warnings_ignored` around a tool's ``main()``,
:func:`quiet_library_notices` on its Runner's logger); importing ``cgrseg``
leaves them alone, so a user's own script sees every warning."""
import logging
import re
import warnings
from contextlib import contextmanager
from typing import Iterator

# Python warnings, matched at the start of the message.
LIBRARY_WARNINGS = (
    # mmengine's is_installed() imports pkg_resources, which setuptools
    # deprecates.
    'pkg_resources is deprecated',
    # mmseg's BaseDecodeHead builds its losses with its own build_loss.
    '``build_loss`` would be deprecated',
    # The configs keep avg_non_ignore=False on purpose (docs/porting.md M1);
    # mmseg warns about the default whenever a loss is built.
    'Default ``avg_non_ignore`` is False',
)

# MMEngine log records, matched at the start of the message.
LIBRARY_NOTICES = (
    # mmseg's IoUMetric has no default prefix; setting one would rename
    # every metric (and break `save_best='mIoU'`).
    'The prefix is not set in metric class',
    # MMEngine's own CheckpointHook builds a FileClient on every run.
    '"FileClient" will be deprecated',
    '"HardDiskBackend" is the alias of "LocalBackend"',
)


@contextmanager
def library_warnings_ignored() -> Iterator[None]:
    """Within: :data:`LIBRARY_WARNINGS` are not shown; the warning filters
    are restored on exit. For a tool's ``main()``."""
    with warnings.catch_warnings():
        for notice in LIBRARY_WARNINGS:
            warnings.filterwarnings('ignore', message=re.escape(notice))
        yield


class DropLibraryNotices(logging.Filter):
    """Rejects records whose message starts with one of
    :data:`LIBRARY_NOTICES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIBRARY_NOTICES)


def quiet_library_notices(logger: logging.Logger) -> None:
    """Stops ``logger`` (a Runner's) from printing :data:`LIBRARY_NOTICES`."""
    logger.addFilter(DropLibraryNotices())
