"""Config adjustments the training and test tools make before building the
Runner: precision, SyncBN availability, and the checkpoint to resume from;
and bad command lines (a missing config, a mistyped config key) and data
(DatasetError) reported in one line."""
import argparse
import difflib
import glob
import inspect
import os.path as osp
import re
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS, Registry
from mmengine.runner import Runner, find_latest_checkpoint
from mmseg import registry as mmseg_registry

from ..datasets import DatasetError
from ..models.utils.checkpoint import CheckpointError, read_checkpoint
from .library_notices import quiet_library_notices


def add_runner_arguments(parser: argparse.ArgumentParser,
                         cfg_options_example: str) -> None:
    """``--cfg-options``, ``--launcher`` and ``--local-rank``, as mmseg's
    train/test tools take them."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help=f'override config settings, e.g. {cfg_options_example}')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_tool_config(config: str, launcher: str,
                     cfg_options: Optional[dict],
                     work_dir: Optional[str]) -> Config:
    """The config as the train/test tools run it: ``--cfg-options`` merged,
    the launcher set, the work dir from ``--work-dir``, else the config's,
    else ``./work_dirs/<config name>``, and SyncBN as BN without CUDA
    (:func:`configure_sync_bn`)."""
    check_config_path(config)
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    configure_sync_bn(cfg)
    return cfg


def check_config_path(config: str) -> None:
    """FileNotFoundError naming a missing config file and the closest
    config in its folder."""
    if osp.isfile(config):
        return
    folder = osp.dirname(config) or '.'
    names = [osp.basename(p) for p in glob.glob(osp.join(folder, '*.py'))]
    close = difflib.get_close_matches(osp.basename(config), names, n=1,
                                      cutoff=0.6)
    hint = f' Did you mean {osp.join(osp.dirname(config), close[0])}?' \
        if close else ''
    raise FileNotFoundError(
        f'config file {config!r} not found (relative paths are relative to '
        f'the working directory, {osp.abspath(".")}).{hint}')


_UNEXPECTED_KEYWORD = re.compile(
    r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")


def _config_entries(node) -> Iterator[dict]:
    """Every dict with a ``type`` in a (nested) config."""
    if isinstance(node, dict):
        if 'type' in node:
            yield node
        for value in node.values():
            yield from _config_entries(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _config_entries(value)


def _registered_class(type_) -> Optional[type]:
    """The class a config ``type`` names, looked up in mmseg's registries
    (which fall back to MMEngine's)."""
    if inspect.isclass(type_):
        return type_
    if not isinstance(type_, str):
        return None
    for registry in vars(mmseg_registry).values():
        if isinstance(registry, Registry):
            cls = registry.get(type_)
            if cls is not None:
                return cls
    return None


def unexpected_keyword_message(err: TypeError, cfg: Config) -> Optional[str]:
    """For a TypeError from building an entry of ``cfg`` with a keyword its
    class does not take (a mistyped key): the class, the key and the
    parameters it takes. None for any other TypeError, e.g. one raised by
    code rather than by a config entry."""
    match = _UNEXPECTED_KEYWORD.search(str(err))
    if match is None:
        return None
    name, key = match.groups()
    for entry in _config_entries(cfg.to_dict()):
        cls = _registered_class(entry['type']) if key in entry else None
        if cls is None or cls.__name__ != name:
            continue
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                 inspect.Parameter.KEYWORD_ONLY)
        params = [p.name for p in inspect.signature(cls).parameters.values()
                  if p.kind in kinds]
        return (f'{name} has no parameter {key!r}: check the config and '
                f'--cfg-options for a mistyped key. {name} takes: '
                f'{", ".join(params)}.')
    return None


@contextmanager
def config_key_errors(tool: str, cfg: Config) -> Iterator[None]:
    """Turns a key of ``cfg`` that its class does not take, and a dataset
    that the config cannot train or test on (:class:`~cgrseg.datasets.
    DatasetError`, e.g. from DatasetCheckHook), into one line
    ``'<tool>: ...'`` (SystemExit) instead of a traceback."""
    try:
        yield
    except DatasetError as err:
        raise SystemExit(f'{tool}: {err}') from None
    except TypeError as err:
        message = unexpected_keyword_message(err, cfg)
        if message is None:
            raise
        raise SystemExit(f'{tool}: {message}') from None


def build_runner(cfg: Config) -> Runner:
    """MMEngine's Runner, or the config's own ``runner_type``, without the
    library notices of :mod:`.library_notices`."""
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else \
        RUNNERS.build(cfg)
    quiet_library_notices(runner.logger)
    return runner


def configure_amp(cfg: Config, enable: bool) -> None:
    """``--amp``: fp16 ``NonFiniteSkipAmpOptimWrapper`` (MMEngine's
    ``AmpOptimWrapper``, dynamic loss scale, plus the non-finite safeguards)
    on CUDA, bfloat16 ``CPUAmpOptimWrapper`` on CPU. Also rejects a config
    that asks for a CUDA AMP wrapper where there is no CUDA."""
    cuda = torch.cuda.is_available()
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    cuda_amp = ('AmpOptimWrapper', 'NonFiniteSkipAmpOptimWrapper')
    if wrapper in cuda_amp and not cuda:
        raise ValueError(
            f'optim_wrapper.type is {wrapper} (fp16 with a CUDA '
            'GradScaler) but CUDA is not available. On CPU, pass --amp to '
            "use bfloat16 (optim_wrapper.type='CPUAmpOptimWrapper') or "
            'remove the AMP wrapper from the config.')
    if not enable or wrapper in cuda_amp + ('CPUAmpOptimWrapper', ):
        return
    if cuda:
        cfg.optim_wrapper.type = 'NonFiniteSkipAmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    else:
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'
    print_log(f'--amp: using {cfg.optim_wrapper.type}', logger='current')


def _replace_sync_bn(node) -> int:
    count = 0
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _replace_sync_bn(value)
    return count


def configure_sync_bn(cfg: Config) -> None:
    """SyncBN needs CUDA; without it the model's SyncBN configs become BN.
    (On a single GPU MMEngine's Runner reverts SyncBN itself.)"""
    if torch.cuda.is_available():
        return
    if _replace_sync_bn(cfg.model):
        print_log('CUDA is not available: SyncBN layers are built as BN.',
                  logger='current')


def init_gloo_process_group() -> None:
    """Start torchrun's process group with gloo for ranks on CPUs: MMEngine's
    launcher calls ``torch.cuda.set_device``, which a CPU build of torch
    lacks, and NCCL needs CUDA. A group already started is kept."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend='gloo')


def init_cpu_distributed(cfg: Config) -> None:
    """Without CUDA, start torchrun's process group with gloo ourselves
    (:func:`init_gloo_process_group`; the Runner then finds the group
    initialised) and wrap the model in DDP without device ids."""
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = \
        'gloo'
    cfg.setdefault(
        'model_wrapper_cfg',
        dict(type='MMDistributedDataParallel', device_ids=None,
             broadcast_buffers=False))
    init_gloo_process_group()


def check_resume_checkpoint(work_dir: str,
                            checkpoint: Optional[str]) -> Optional[str]:
    """The checkpoint ``--resume`` will load (given, or the latest in
    ``work_dir``), after checking that it is readable."""
    if checkpoint is None:
        checkpoint = find_latest_checkpoint(work_dir)
        if checkpoint is None:
            print_log(f'--resume: no checkpoint in {work_dir}; training '
                      f'starts from scratch.', logger='current')
            return None
    try:
        read_checkpoint(checkpoint)
    except (CheckpointError, FileNotFoundError) as err:
        others = sorted(
            (p for p in glob.glob(osp.join(work_dir, '*.pth'))
             if osp.abspath(p) != osp.abspath(checkpoint)),
            key=osp.getmtime, reverse=True)
        hint = ('Checkpoints in the work dir, newest first: ' +
                ', '.join(others) + '. Resume from one of them with '
                '--resume PATH.') if others else \
            'No other checkpoint is in the work dir.'
        raise CheckpointError(f'cannot resume: {err}\n{hint}') from err
    return checkpoint
