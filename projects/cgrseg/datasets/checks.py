"""Fail early, with one clear message, when a config's dataset is missing,
finds no image, or its metainfo (classes, palette) is inconsistent."""
import inspect
import os.path as osp
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import mmseg
from mmengine import fileio
from mmengine.config import Config
from mmseg.registry import DATASETS


class DatasetError(ValueError):
    """A dataset the model cannot be trained or tested on; the message names
    the file or setting and the fix (the tools print it as one line)."""


GUIDE = ('https://mmsegmentation.readthedocs.io/en/latest/user_guides/'
         '2_dataset_prepare.html')
_CONVERTERS = osp.join(
    osp.dirname(mmseg.__file__), '.mim', 'tools', 'dataset_converters')
_PASCAL_CONTEXT = (
    'download http://host.robots.ox.ac.uk/pascal/VOC/voc2010/'
    'VOCtrainval_03-May-2010.tar and extract it in {grandparent}, put '
    'https://codalabuser.blob.core.windows.net/public/trainval_merged.json '
    'in {root}, install Detail (https://github.com/zhanghang1989/detail-api)'
    ' and run\n'
    '    python tools/dataset_converters/pascal_context.py {parent} '
    '{root}/trainval_merged.json', 'pascal_context.py')
# Dataset type -> (how to prepare it, mmseg converter script or '').
PREPARATION: Dict[str, Tuple[str, str]] = {
    'ADE20KDataset':
    ('download http://data.csail.mit.edu/places/ADEchallenge/'
     'ADEChallengeData2016.zip and unzip it in {parent} (no conversion)', ''),
    'COCOStuffDataset':
    ('for COCO-Stuff-10k, download http://calvin.inf.ed.ac.uk/wp-content/'
     'uploads/data/cocostuffdataset/cocostuff-10k-v1.1.zip, unzip it in '
     '{root} and run\n'
     '    python tools/dataset_converters/coco_stuff10k.py {root} --nproc 8',
     'coco_stuff10k.py'),
    'PascalContextDataset': _PASCAL_CONTEXT,
    'PascalContextDataset59': _PASCAL_CONTEXT,
}


def leaf_datasets(dataset, key: str) -> Iterator[Tuple[Any, str]]:
    """(leaf dataset, its dotted config key) inside MMEngine's and mmseg's
    wrappers (``ConcatDataset``'s ``datasets``, ``RepeatDataset``'s and
    the like's ``dataset``), for config dicts and built datasets alike, so
    that the messages of both name the same key."""

    def part(name: str):
        return dataset.get(name) if isinstance(dataset, dict) else getattr(
            dataset, name, None)

    if part('datasets') is not None:  # ConcatDataset
        for i, sub in enumerate(part('datasets')):
            yield from leaf_datasets(sub, f'{key}.datasets.{i}')
    elif part('dataset') is not None:  # RepeatDataset & co.
        yield from leaf_datasets(part('dataset'), f'{key}.dataset')
    else:
        yield dataset, key


def _split_datasets(cfg: Config, splits: Sequence[str]
                    ) -> Iterator[Tuple[str, dict, str]]:
    """Yield (split, dataset cfg, its dotted config key) for the leaf
    datasets of the ``{split}_dataloader`` entries that ``cfg`` has."""
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if loader and loader.get('dataset'):
            for dataset, key in leaf_datasets(loader['dataset'],
                                               f'{split}_dataloader.dataset'):
                yield split, dataset, key


def _expected_paths(dataset: dict) -> List[Tuple[str, str]]:
    """(role, absolute path) the dataset reads, joined the way MMEngine's
    ``BaseDataset`` joins them; remote (``scheme://``) paths are left out."""
    root = dataset.get('data_root') or ''
    entries = [('data_root', root)]
    prefix = dataset.get('data_prefix') or {}
    entries += [(key, osp.join(root, path)) for key, path in prefix.items()
                if path]
    ann_file = dataset.get('ann_file') or ''
    if ann_file:
        entries.append(('ann_file', osp.join(root, ann_file)))
    return [(role, osp.abspath(path)) for role, path in entries
            if path and '://' not in path]


def _type_name(dataset: dict) -> str:
    kind = dataset.get('type', '?')
    return getattr(kind, '__name__', str(kind))


def _note(table: Dict[tuple, List[str]], key: tuple, split: str) -> None:
    """Record that ``split`` uses ``key`` (each split once)."""
    splits = table.setdefault(key, [])
    if split not in splits:
        splits.append(split)


def _preparation(kind: str, root: str) -> List[str]:
    """How to prepare a dataset of type ``kind`` whose root is ``root``."""
    text, script = PREPARATION.get(kind, ('see the guide above', ''))
    parent = osp.dirname(root)
    lines = [f'  {kind}: ' + text.format(
        root=root, parent=parent, grandparent=osp.dirname(parent))]
    if script:
        lines.append('    (in an mmsegmentation checkout')
        installed = osp.join(_CONVERTERS, script)
        if osp.isfile(installed):
            lines[-1] += f'; mmseg also installs it as {installed}'
        lines[-1] += ')'
    return lines


def check_data_roots(
        cfg: Config,
        splits: Sequence[str] = ('train', 'val', 'test')) -> None:
    """Raise one ``FileNotFoundError`` naming every dataset path that the
    ``{split}_dataloader`` datasets of ``cfg`` need and that does not exist,
    with how to prepare the data and how to point the config elsewhere."""
    # (path, type, role) -> splits; (type, root) -> (path, role) -> splits
    missing: Dict[Tuple[str, str, str], List[str]] = {}
    layouts: Dict[Tuple[str, str], Dict[Tuple[str, str], List[str]]] = {}
    broken: Dict[Tuple[str, str], None] = {}  # ordered set of (type, root)
    options: Dict[str, None] = {}  # ordered set of --cfg-options
    for split, dataset, key in _split_datasets(cfg, splits):
        kind = _type_name(dataset)
        if getattr(DATASETS.get(kind), 'generates_missing_files', False):
            continue
        paths = _expected_paths(dataset)
        root = dict(paths).get('data_root', osp.abspath('.'))
        layout = layouts.setdefault((kind, root), {})
        for role, path in paths:
            if role != 'data_root':
                _note(layout, (path, role), split)
        absent = [(role, path) for role, path in paths
                  if not osp.exists(path)]
        if not absent:
            continue
        if absent[0][0] == 'data_root':
            absent = absent[:1]  # everything below it is missing too
        for role, path in absent:
            _note(missing, (path, kind, role), split)
        broken[(kind, root)] = None
        name = osp.basename(root) or 'data'
        options[f'{key}.data_root=/path/to/{name}'] = None
    if not missing:
        return

    lines = [f'Dataset not found: the config needs {len(missing)} path(s) '
             'that do not exist:']
    lines += [f'  {path}  ({", ".join(used_by)}: {kind} {role})'
              for (path, kind, role), used_by in missing.items()]
    lines.append(f'Prepare the data as described in {GUIDE}:')
    for kind, root in broken:
        lines += _preparation(kind, root)
        lines.append(f'  which must give, under {root}:')
        lines += [
            f'    {osp.relpath(path, root)}  ({", ".join(used_by)} {role})'
            for (path, role), used_by in layouts[(kind, root)].items()
        ]
    lines += [
        'Or point the config at existing data (or symlink the data to the '
        'paths above), e.g.', '  --cfg-options ' + ' '.join(options)
    ]
    raise FileNotFoundError('\n'.join(lines))


def _init_default(dataset_cls: type, name: str):
    """The default of a constructor argument, None if it has none."""
    parameter = inspect.signature(dataset_cls).parameters.get(name)
    return None if parameter is None else parameter.default


def _no_images(dataset: dict, dataset_cls: type, key: str) -> Optional[str]:
    """Why a local dataset would find no image (MMEngine fails on an empty
    one while serialising it), else None."""
    root = dataset.get('data_root') or ''
    if dataset.get('ann_file'):
        path = osp.join(root, dataset['ann_file'])
        if '://' in path or not osp.isfile(path):
            return None  # remote, or missing (check_data_roots says so)
        with open(path) as f:
            if any(line.strip() for line in f):
                return None
        return f'{key}: its ann_file {path} lists no images.'
    suffix = dataset.get('img_suffix', _init_default(dataset_cls,
                                                     'img_suffix'))
    prefix = (dataset.get('data_prefix') or {}).get('img_path') or ''
    folder = osp.join(root, prefix)
    if not isinstance(suffix, str) or '://' in folder or not osp.isdir(
            folder):
        return None
    files = fileio.list_dir_or_file(folder, list_dir=False, recursive=True)
    other = None
    for name in files:
        if name.endswith(suffix):
            return None
        other = other or name
    holds = f'it holds e.g. {other}' if other else 'it is empty'
    return (f"{key} finds no image: no file under {folder} ends in "
            f"img_suffix '{suffix}' ({holds}): check data_prefix.img_path "
            f'and img_suffix.')


def check_dataset_config(
        cfg: Config,
        splits: Sequence[str] = ('train', 'val', 'test')) -> None:
    """Raise :class:`DatasetError` for a ``{split}_dataloader`` dataset
    without classes, whose palette has another length than its classes, or
    that finds no image, before mmseg builds it (where these fail with the
    whole metainfo printed, an assertion in test mode, or a NumPy error).
    The classes and palette are the config's ``metainfo`` over the dataset
    class's ``METAINFO``, as mmseg merges them; a subset of the class's own
    classes keeps their colours."""
    for _, dataset, key in _split_datasets(cfg, splits):
        kind = _type_name(dataset)
        dataset_cls = DATASETS.get(kind)
        if not hasattr(dataset_cls, 'get_label_map'):
            continue  # not a segmentation dataset
        meta = dict(getattr(dataset_cls, 'METAINFO', {}))
        meta.update(dataset.get('metainfo') or {})
        classes, palette = meta.get('classes'), meta.get('palette') or []
        if not classes:
            raise DatasetError(
                f'{key} ({kind}) has no classes: set {key}.metainfo='
                "dict(classes=('background', ...), palette=[[0, 0, 0], "
                '...]) with one name and one [R, G, B] colour per label '
                'value (docs/own_data.md).')
        subset = dataset_cls.get_label_map(classes) is not None
        if palette and len(palette) != len(classes) and not (
                subset and len(palette) >= len(classes)):
            raise DatasetError(
                f'{key}.metainfo has {len(classes)} classes but '
                f'{len(palette)} palette colours: give one [R, G, B] '
                f'colour per class, in the order of the classes (or '
                f'leave palette out for fixed random colours).')
        if not getattr(dataset_cls, 'generates_missing_files', False):
            problem = _no_images(dataset, dataset_cls, key)
            if problem:
                raise DatasetError(problem)
