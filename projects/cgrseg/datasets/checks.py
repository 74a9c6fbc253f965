"""Fail early, with one clear message, when a config's dataset is missing."""
import os.path as osp
from typing import Dict, Iterator, List, Sequence, Tuple

import mmseg
from mmengine.config import Config
from mmseg.registry import DATASETS

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


def _leaf_datasets(dataset: dict,
                   key: str) -> Iterator[Tuple[dict, str]]:
    """Yield (dataset cfg, its dotted config key), unwrapping wrappers."""
    if dataset.get('datasets') is not None:  # ConcatDataset
        for i, sub in enumerate(dataset['datasets']):
            yield from _leaf_datasets(sub, f'{key}.datasets.{i}')
    elif dataset.get('dataset') is not None:  # RepeatDataset & co.
        yield from _leaf_datasets(dataset['dataset'], f'{key}.dataset')
    else:
        yield dataset, key


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
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader or not loader.get('dataset'):
            continue
        for dataset, key in _leaf_datasets(loader['dataset'],
                                           f'{split}_dataloader.dataset'):
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
