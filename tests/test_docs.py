"""The documentation's references to the code exist, and its commands name
files that exist once pasted into bash (from the repository root)."""
import glob
import importlib
import os
import re
import shlex

import pytest

from e2e import DOCS, REPO, documented_commands


def test_tests_named_in_the_docs_exist():
    defined = set()
    for path in (REPO / 'tests').glob('test_*.py'):
        defined |= set(re.findall(r'^def (test_\w+)', path.read_text(),
                                  re.M))
    named = {(path.name, name) for path in DOCS
             for name in re.findall(r'`(?:tests/\w+\.py::)?(test_\w+)`',
                                    path.read_text())}
    assert named, 'no test names found: the pattern is out of date'
    assert not {(doc, name) for doc, name in named if name not in defined}


def test_documented_commands_are_found():
    commands = [command for _, command in documented_commands()]
    assert 'python tools/train.py configs/distill/kd_cgrseg-l-to-cgrseg-t_' \
        '1xb8-adamw-300iter_shapes-128x128.py' in commands
    assert len(commands) > 40


@pytest.mark.parametrize('source,command', list(documented_commands()),
                         ids=lambda value: str(value)[:60])
def test_documented_command_names_existing_files(source, command):
    """Every script or config a command names (a word under configs/,
    tools/ or demo/, or a lower-case *.py word) is a file; placeholders
    are upper case, optional words in [brackets]; ``package::path`` names
    a config of an installed package."""
    for word in shlex.split(command):
        if '::' in word:  # a config shipped with an installed package
            package, relative = word.split('::', 1)
            root = os.path.dirname(importlib.import_module(package).__file__)
            path = os.path.join(root, '.mim', 'configs', relative)
            assert os.path.isfile(path), f'{source}: {word!r} not found'
            continue
        local = word.startswith(('configs/', 'tools/', 'demo/'))
        if command.startswith('mim ') and not local or word[0] == '[':
            continue  # mim finds configs by name
        if local or (word.endswith('.py') and word.islower()):
            files = glob.glob(str(REPO / word))
            assert files and all(os.path.isfile(f) for f in files), \
                f'{source}: {word!r} in `{command}` is not a file'


def test_porting_codes_used_anywhere_are_defined_in_porting_md():
    porting = (REPO / 'docs' / 'porting.md').read_text()
    defined = set(re.findall(r'^\| ([QHM]\d+) \|', porting, re.M))
    assert {'Q3', 'H1', 'M2'} <= defined, 'the table pattern is out of date'
    used = {}
    for pattern in ('projects/**/*.py', 'configs/**/*.py', 'tools/**/*.py',
                    '*.md', 'docs/*.md', 'configs/**/*.md'):
        for path in glob.glob(str(REPO / pattern), recursive=True):
            with open(path) as file:
                for code in re.findall(r'\b(?:porting\.md|quirk) ([QHM]\d+)\b',
                                       file.read()):
                    used.setdefault(code, path)
    assert used, 'no code references found: the pattern is out of date'
    assert not {code: path for code, path in used.items()
                if code not in defined}
