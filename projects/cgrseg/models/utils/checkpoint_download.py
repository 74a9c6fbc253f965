"""Downloading a checkpoint URL once into ``<torch hub dir>/checkpoints``
(``$TORCH_HOME/hub/checkpoints``, where MMEngine and torchvision keep theirs),
checking the SHA-256 prefix in the file name (``...-19b14b63.pth``,
OpenMMLab's and torchvision's convention). The file is streamed in 1 MiB
chunks to a temporary file of its own in the cache folder (two jobs that
share a cache never write one file) and renamed to its cache name when it is
complete; the console shows its size and a progress bar (rank 0), the log
its size and rate. A failed download raises one :class:`CheckpointError`
line naming the URL and the cause, and leaves nothing in the cache.

Why not ``torch.hub.load_state_dict_from_url`` (what MMEngine's URL loader
calls): it unpickles with ``weights_only=False``, checks no hash unless asked,
caches by file name alone (Hugging Face's ``.../resolve/main/
model.safetensors`` of two models would share one file), and its chunked
reads take a connection closed mid-file for the end of the file.
"""
import hashlib
import http.client
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from typing import BinaryIO, Optional, Tuple
from urllib.parse import urlparse

import torch.hub
from mmengine.dist import get_dist_info
from mmengine.logging import print_log
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                           TimeRemainingColumn, TransferSpeedColumn)

# At least 8 hex digits, so that a name like 'model-ade.pth' is no hash.
HASH_IN_NAME = re.compile(r'-([a-f0-9]{8,})\.')
CHUNK = 1 << 20
MIB = float(1 << 20)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, downloaded or used."""


class CacheWriteError(OSError):
    """The cache folder could not take the file (e.g. a full disk)."""


def cache_path(url: str) -> str:
    """Where a URL's file is cached: ``<hub dir>/checkpoints/<file name>``,
    as torch and MMEngine cache it, except for Hugging Face's
    ``/<owner>/<repo>/resolve/<revision>/<file>`` URLs, whose file names
    (``model.safetensors``) repeat across repositories:
    ``<owner>--<repo>--<file>``."""
    segments = [s for s in urlparse(url).path.split('/') if s]
    if not segments:
        raise CheckpointError(f'checkpoint URL {url!r} names no file.')
    name = segments[-1]
    if len(segments) >= 5 and segments[2] == 'resolve':
        name = f'{segments[0]}--{segments[1]}--{name}'
    return os.path.join(torch.hub.get_dir(), 'checkpoints', name)


def _cause(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f'the server answered HTTP {err.code} {err.reason}'
    if isinstance(err, urllib.error.URLError):
        return f'no connection ({err.reason})'
    if isinstance(err, http.client.IncompleteRead):
        return (f'the connection closed after {len(err.partial)} bytes, '
                f'{err.expected} more expected')
    if isinstance(err, ValueError):
        return str(err)
    return f'{type(err).__name__}: {err}'


def _progress() -> Progress:
    """A byte progress bar on stderr, shown on rank 0 only; on a console
    that is not a terminal rich draws it once, when it stops."""
    return Progress(
        TextColumn('{task.description}', markup=False), BarColumn(),
        DownloadColumn(binary_units=True), TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True), disable=get_dist_info()[0] != 0)


def _write(file: BinaryIO, chunk: bytes) -> None:
    try:
        file.write(chunk)
    except OSError as err:
        raise CacheWriteError(err.errno, err.strerror) from err


def _stream(response, file: BinaryIO, name: str,
            size: Optional[int]) -> str:
    """Copies ``response`` to ``file`` chunk by chunk; returns the SHA-256.
    Raises ``ValueError`` when fewer bytes than announced arrive."""
    digest, received = hashlib.sha256(), 0
    with _progress() as progress:
        task = progress.add_task(name, total=size)
        while True:
            chunk = response.read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            _write(file, chunk)
            received += len(chunk)
            progress.update(task, advance=len(chunk))
    if size is not None and received < size:
        # http.client ends a chunked read at a closed connection silently.
        raise ValueError(f'the connection closed after {received} bytes, '
                         f'{size - received} more expected')
    try:
        file.flush()
        os.fsync(file.fileno())
    except OSError as err:
        raise CacheWriteError(err.errno, err.strerror) from err
    return digest.hexdigest()


def _download_to(url: str, path: str, hash_prefix: Optional[str]) -> None:
    """Streams ``url`` into ``path`` through a temporary file of its own."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise CacheWriteError(err.errno, err.strerror) from err
    start = time.monotonic()
    with urllib.request.urlopen(url) as response:
        size = response.headers.get('Content-Length')
        size = int(size) if size and size.isdigit() else None
        shown = f'{size / MIB:.1f} MiB' if size is not None else 'size unknown'
        print_log(f'Downloading {url} ({shown}) to {path}', logger='current')
        try:
            fd, tmp = tempfile.mkstemp(dir=folder,
                                       prefix=os.path.basename(path) + '.',
                                       suffix='.part')
        except OSError as err:
            raise CacheWriteError(err.errno, err.strerror) from err
        try:
            with os.fdopen(fd, 'wb') as file:
                digest = _stream(response, file,
                                 os.path.basename(path), size)
            if hash_prefix and not digest.startswith(hash_prefix):
                raise ValueError(
                    f'its SHA-256 does not start with {hash_prefix}, the '
                    f'hash in its file name: the download is corrupt or not '
                    f'the published file')
            os.replace(tmp, path)
        finally:
            if os.path.lexists(tmp):
                os.remove(tmp)
    seconds = time.monotonic() - start
    got = os.path.getsize(path) / MIB
    print_log(f'Downloaded {got:.1f} MiB in {seconds:.1f} s '
              f'({got / max(seconds, 1e-6):.1f} MiB/s).', logger='current')


def cached_download(url: str) -> Tuple[str, bool]:
    """The local file of ``url`` and whether this call downloaded it."""
    path = cache_path(url)
    if os.path.isfile(path):
        return path, False
    match = HASH_IN_NAME.search(os.path.basename(path))
    try:
        _download_to(url, path, match.group(1) if match else None)
    except CacheWriteError as err:
        raise CheckpointError(
            f'could not download checkpoint {url}: writing to '
            f'{os.path.dirname(path)} failed ({err.strerror or err}). '
            f'Nothing was cached; free space there, or set $TORCH_HOME to a '
            f'folder on another disk.') from err
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise CheckpointError(
            f'could not download checkpoint {url}: {_cause(err)}. Nothing '
            f'was cached. Without network access, download the file '
            f'elsewhere and give its local path instead, or copy it to '
            f'{path}.') from err
    return path, True


def forget_download(url: str, path: str, downloaded: bool,
                    err: CheckpointError) -> CheckpointError:
    """The error for a cached file of ``url`` that does not load; a file
    this run downloaded is removed, so the next run downloads afresh."""
    if downloaded:
        os.remove(path)
        return CheckpointError(f'{err} Downloaded from {url}; not kept in '
                               f'the cache.')
    return CheckpointError(f'{err} It is the cached download of {url}: '
                           f'delete {path} to download it again.')
