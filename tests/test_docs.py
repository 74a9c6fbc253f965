"""The documentation's references to the code exist."""
import re

from e2e import REPO

DOCS = [REPO / 'README.md', REPO / 'configs' / 'cgrseg' / 'README.md',
        *sorted((REPO / 'docs').glob('*.md'))]


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
