"""Drops the warnings MMEngine logs about its own internals on every run:
a user of this package can do nothing about them, and they read as if
something were wrong with the run."""
import logging

LIBRARY_NOTICES = (
    # mmseg's IoUMetric has no default prefix; setting one would rename
    # every metric (and break `save_best='mIoU'`).
    'The prefix is not set in metric class',
    # MMEngine's own CheckpointHook builds a FileClient on every run.
    '"FileClient" will be deprecated',
    '"HardDiskBackend" is the alias of "LocalBackend"',
)


class DropLibraryNotices(logging.Filter):
    """Rejects records whose message starts with one of
    :data:`LIBRARY_NOTICES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIBRARY_NOTICES)


def quiet_library_notices(logger: logging.Logger) -> None:
    """Stops ``logger`` (a Runner's) from printing :data:`LIBRARY_NOTICES`."""
    logger.addFilter(DropLibraryNotices())
