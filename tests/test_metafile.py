"""The model zoo's metadata: configs/cgrseg/metafile.yaml (OpenMMLab
model-index format, imported by the root model-index.yml) covers every
config, points at existing files and quotes the paper's results."""
import pytest
import yaml

from reference import REPO_ROOT

CONFIG_DIR = REPO_ROOT / 'configs' / 'cgrseg'
# Authors' README (nizhenliang/CGRSeg 09fc92b), as in
# /work/shared/reference/paper_results.md.
PAPER_MIOU = {
    ('s1', 'ADE20K'): ('mIoU', 43.6),
    ('s2', 'ADE20K'): ('mIoU', 45.5),
    ('l', 'ADE20K'): ('mIoU', 48.3),
    ('s1', 'COCO-Stuff 10k'): ('mIoU', 42.2),
    ('s2', 'COCO-Stuff 10k'): ('mIoU', 43.5),
    ('l', 'COCO-Stuff 10k'): ('mIoU', 46.0),
    ('s1', 'Pascal Context 59'): ('mIoU(ms+flip)', 54.1),
    ('s2', 'Pascal Context 59'): ('mIoU(ms+flip)', 56.5),
    ('l', 'Pascal Context 59'): ('mIoU(ms+flip)', 58.5),
}


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope='module')
def models():
    return load(CONFIG_DIR / 'metafile.yaml')['Models']


def test_root_model_index_imports_the_metafile():
    assert load(REPO_ROOT / 'model-index.yml') == {
        'Import': ['configs/cgrseg/metafile.yaml']
    }


def test_every_config_has_one_entry_and_every_entry_a_config(models):
    configs = sorted(
        p.relative_to(REPO_ROOT).as_posix()
        for p in CONFIG_DIR.glob('*.py'))
    assert sorted(m['Config'] for m in models) == configs
    for model in models:
        assert (REPO_ROOT / model['Config']).is_file()
        assert model['Name'] == model['Config'].split('/')[-1][:-len('.py')]
        assert model['In Collection'] == 'CGRSeg'
        assert 'Weights' not in model  # no trained weights were published


def test_results_are_the_papers(models):
    quoted = {}
    for model in models:
        if 'Results' not in model:
            continue
        arch = model['Name'].split('_')[1].split('-')[1]
        result = model['Results']
        assert result['Task'] == 'Semantic Segmentation'
        (metric, value), = result['Metrics'].items()
        quoted[(arch, result['Dataset'])] = (metric, value)
    assert quoted == PAPER_MIOU


def test_model_index_tool_accepts_it():
    modelindex = pytest.importorskip('modelindex')
    index = modelindex.load(str(REPO_ROOT / 'model-index.yml'))
    index.build_models_with_collections()
    # Paths are relative to the repository root, as in OpenMMLab's
    # metafiles (and mim); model-index resolves README paths against the
    # metafile's folder instead, so that check is made here.
    errors = [
        error for entry in index.collect_check_errors()
        for error in entry['errors'] if not error.startswith('Path to README')
    ]
    assert errors == []
    readme = load(CONFIG_DIR / 'metafile.yaml')['Collections'][0]['README']
    assert (REPO_ROOT / readme).is_file()
    assert len(index.models) == len(list(CONFIG_DIR.glob('*.py')))
