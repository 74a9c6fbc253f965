"""This package's readers for every scheme of MMEngine's
``CheckpointLoader`` (its extension point for checkpoint sources), so that
``load_from``, ``--resume``, ``init_cfg`` and the tools read every source
through :func:`.checkpoint_file.load_file`: ``torch.load(weights_only=True)``
or ``safetensors``, and one error line.

Importing this module replaces MMEngine's loaders for the whole process
(``force=True``). MMEngine's own URL loader, and the ``open-mmlab://``,
``torchvision://`` and ``mmcls://`` loaders that call it, read through
``torch.hub`` with ``weights_only=False``, which runs any code a pickle
holds. Here:

======================================  ====================================
scheme                                  read
======================================  ====================================
local path (no scheme)                  :func:`load_file`
``http://``, ``https://``               downloaded once
                                        (:mod:`.checkpoint_download`), then
                                        :func:`load_file`
``open-mmlab://``, ``openmmlab://``     MMEngine's table of names → URL
                                        (or a file under MMEngine's home)
``torchvision://``, ``modelzoo://``     torchvision's table of names → URL
``mmcls://``                            MMEngine's table of names → URL,
                                        then MMEngine's mmcls key renaming
``s3://``, ``petrel://`` (and           MMEngine's petrel file backend,
``<name>:s3://``, ...)                  then :func:`load_file`
``pavi://``                             refused (one line: download it and
                                        give the path)
======================================  ====================================
"""
import os
import os.path as osp
import tempfile

import mmengine.fileio
import mmengine.runner.checkpoint as mmengine_checkpoint
from mmengine.dist import barrier, get_dist_info
from mmengine.runner.checkpoint import CheckpointLoader

from .checkpoint_download import (CheckpointError, cached_download,
                                  forget_download)
from .checkpoint_file import load_file


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_from_local(filename: str, map_location=None) -> dict:
    """MMEngine's local scheme, through :func:`load_file`."""
    return load_file(os.path.expanduser(filename), map_location=map_location)


def _download_and_load(url: str, map_location) -> dict:
    path, downloaded = cached_download(url)
    try:
        return load_file(path, source=url, map_location=map_location)
    except CheckpointError as err:
        # A file that does not load must not stay where the next run would
        # take it for the checkpoint.
        raise forget_download(url, path, downloaded, err) from err


@CheckpointLoader.register_scheme(prefixes=('http://', 'https://'),
                                  force=True)
def load_from_http(filename: str, map_location=None) -> dict:
    """MMEngine's URL scheme (rank 0 downloads first, the other ranks then
    read its cached file), downloading through :mod:`.checkpoint_download`
    and reading through :func:`load_file`."""
    rank, world_size = get_dist_info()
    if rank == 0:
        ckpt = _download_and_load(filename, map_location)
    if world_size > 1:
        barrier()
        if rank > 0:
            ckpt = _download_and_load(filename, map_location)
    return ckpt


def _model_name(filename: str) -> str:
    return filename.split('://', 1)[1]


def _url_of(filename: str, table: dict, where: str) -> str:
    name = _model_name(filename)
    if name not in table:
        raise CheckpointError(
            f'{filename!r}: {name!r} is not a model name MMEngine knows '
            f'({where}); give the checkpoint\'s URL or local path instead.')
    return table[name]


@CheckpointLoader.register_scheme(prefixes=('open-mmlab://', 'openmmlab://'),
                                  force=True)
def load_from_openmmlab(filename: str, map_location=None) -> dict:
    """OpenMMLab's named models: MMEngine's table (``hub/openmmlab.json``
    plus ``<mmengine home>/open_mmlab.json``, deprecated names followed)
    gives a URL, or a file under MMEngine's home."""
    deprecated = mmengine_checkpoint.get_deprecated_model_names()
    scheme, name = filename.split('://', 1)
    name = deprecated.get(name, name)
    url = _url_of(f'{scheme}://{name}',
                  mmengine_checkpoint.get_external_models(),
                  'mmengine/hub/openmmlab.json')
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location)
    # MMEngine's home folder has no public accessor.
    return load_file(osp.join(mmengine_checkpoint._get_mmengine_home(), url),
                     source=filename, map_location=map_location)


@CheckpointLoader.register_scheme(prefixes=('modelzoo://', 'torchvision://'),
                                  force=True)
def load_from_torchvision(filename: str, map_location=None) -> dict:
    """torchvision's named weights (``torchvision://resnet50``), by the URL
    in torchvision's table."""
    try:
        table = mmengine_checkpoint.get_torchvision_models()
    except ImportError as err:
        raise CheckpointError(
            f'{filename!r}: torchvision:// names are looked up in '
            f'torchvision, which is not installed ({err}); pip install '
            f'torchvision, or give the checkpoint\'s URL.') from err
    return load_from_http(
        _url_of(filename, table, "torchvision's weights"), map_location)


@CheckpointLoader.register_scheme(prefixes='mmcls://', force=True)
def load_from_mmcls(filename: str, map_location=None) -> dict:
    """mmcls's named models (``hub/mmcls.json``), with MMEngine's renaming
    of their keys (``backbone.*`` to the bare backbone's)."""
    url = _url_of(filename, mmengine_checkpoint.get_mmcls_models(),
                  'mmengine/hub/mmcls.json')
    # The renaming is MMEngine's; it has no public name.
    return mmengine_checkpoint._process_mmcls_checkpoint(
        load_from_http(url, map_location))


@CheckpointLoader.register_scheme(
    prefixes=[r'(\S+\:)?s3://', r'(\S+\:)?petrel://'], force=True)
def load_from_ceph(filename: str, map_location=None) -> dict:
    """Object storage through MMEngine's petrel file backend, read from a
    temporary file (the storage's file name kept, for ``.safetensors``)."""
    data = mmengine.fileio.get(filename, backend_args=dict(backend='petrel'))
    suffix = osp.splitext(filename)[1]
    with tempfile.TemporaryDirectory() as folder:
        path = osp.join(folder, 'checkpoint' + suffix)
        with open(path, 'wb') as f:
            f.write(data)
        return load_file(path, source=filename, map_location=map_location)


@CheckpointLoader.register_scheme(prefixes='pavi://', force=True)
def load_from_pavi(filename: str, map_location=None) -> dict:
    """Refused: OpenMMLab's internal model cloud, whose client is not
    public."""
    raise CheckpointError(
        f'{filename!r}: pavi:// checkpoints are not read by cgrseg (its '
        f'client is not public, and MMEngine reads them with torch.load\'s '
        f'default pickling); download the file and give its local path.')


def load_checkpoint(source: str, map_location='cpu') -> dict:
    """The checkpoint at ``source`` (any scheme above), through MMEngine's
    ``CheckpointLoader`` and this module's readers."""
    return CheckpointLoader.load_checkpoint(source, map_location=map_location)
