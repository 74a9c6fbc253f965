"""Downloading a checkpoint URL once into ``<torch hub dir>/checkpoints``
(``$TORCH_HOME/hub/checkpoints``, where MMEngine and torchvision keep theirs)
through MMEngine's file backends (``mmengine.fileio.get``), checking the
SHA-256 prefix in the file name (``...-19b14b63.pth``, OpenMMLab's and
torchvision's convention) and writing the cache file atomically. A failed
download raises one :class:`CheckpointError` line naming the URL and the
cause, and leaves nothing in the cache.

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
import urllib.error
from typing import Tuple
from urllib.parse import urlparse

import mmengine.fileio
import torch.hub
from mmengine.logging import print_log

# At least 8 hex digits, so that a name like 'model-ade.pth' is no hash.
HASH_IN_NAME = re.compile(r'-([a-f0-9]{8,})\.')


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, downloaded or used."""


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


def cached_download(url: str) -> Tuple[str, bool]:
    """The local file of ``url`` and whether this call downloaded it."""
    path = cache_path(url)
    if os.path.isfile(path):
        return path, False
    match = HASH_IN_NAME.search(os.path.basename(path))
    hash_prefix = match.group(1) if match else None
    print_log(f'Downloading {url} to {path}', logger='current')
    try:
        data = mmengine.fileio.get(url)
        digest = hashlib.sha256(data).hexdigest()
        if hash_prefix and not digest.startswith(hash_prefix):
            raise ValueError(
                f'its SHA-256 does not start with {hash_prefix}, the hash '
                f'in its file name: the download is corrupt or not the '
                f'published file')
        # The project's atomic backend: a complete file or none.
        mmengine.fileio.put(data, path,
                            backend_args=dict(backend='local_atomic'))
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
