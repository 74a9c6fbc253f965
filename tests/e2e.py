"""Running the project's command-line tools in subprocesses for the
end-to-end tests, on the embedded demo dataset with tiny schedules."""
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterator, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = str(REPO / 'configs' / 'cgrseg' /
                  'cgrseg_efficientformerv2-s1_1xb8-adamw-300iter_'
                  'shapes-128x128.py')
DOCS = [REPO / 'README.md', REPO / 'configs' / 'cgrseg' / 'README.md',
        *sorted((REPO / 'docs').glob('*.md'))]
CONFIGS = sorted((REPO / 'configs').glob('**/*.py'))


def tiny_schedule(data_root: str, iters: int = 8, interval: int = 4) -> list:
    """--cfg-options for a short, deterministic demo run."""
    return [
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        'train_dataloader.batch_size=2',
        'train_dataloader.num_workers=1',
        'val_dataloader.num_workers=1',
        'test_dataloader.num_workers=1',
        f'train_cfg.max_iters={iters}',
        f'train_cfg.val_interval={interval}',
        f'default_hooks.checkpoint.interval={interval}',
        'default_hooks.checkpoint.save_best=None',
        'default_hooks.checkpoint.max_keep_ckpts=-1',
        'default_hooks.logger.interval=1',
        f'param_scheduler.1.end={iters}',
        'randomness.deterministic=True',
    ]


def run(args: List[str],
        env: Optional[Dict[str, str]] = None,
        timeout: int = 600,
        check: bool = True,
        cwd: Optional[str] = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    full_env.update(env or {})
    proc = subprocess.run(
        args, cwd=cwd or str(REPO), env=full_env, capture_output=True,
        text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f'{" ".join(args)} exited with {proc.returncode}\n'
            f'--- stdout ---\n{proc.stdout[-6000:]}\n'
            f'--- stderr ---\n{proc.stderr[-6000:]}')
    return proc


def python(*args: str) -> List[str]:
    return [sys.executable, *args]


def load_script(path: str) -> ModuleType:
    """A script under tools/ (``path`` relative to the repository)
    imported as a module, for testing its functions."""
    spec = importlib.util.spec_from_file_location(Path(path).stem,
                                                  REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shell_commands(text: str) -> Iterator[str]:
    """The python/bash/mim commands of a text as bash reads them: a
    backslash at the end of a line joins the next line (whose indentation
    then separates words)."""
    for line in text.replace('\\\n', '').splitlines():
        line = line.split(' #')[0].strip()
        if re.match(r'(\w+=\S+ )*(python|bash|mim) ', line):
            yield line


def documented_commands() -> Iterator[Tuple[Path, str]]:
    """(file relative to the repository, command) for the commands in the
    docs' bash blocks and in the configs' header comments."""
    for path in DOCS:
        for block in re.findall(r'```bash\n(.*?)```', path.read_text(),
                                re.S):
            for command in shell_commands(block):
                yield path.relative_to(REPO), command
    for path in CONFIGS:
        header = []
        for line in path.read_text().splitlines():
            if not line.startswith('#'):
                break
            header.append(line[1:])
        for command in shell_commands('\n'.join(header)):
            yield path.relative_to(REPO), command


def documented(source: str, prefix: str,
               replace: Optional[Dict[str, str]] = None) -> List[str]:
    """The argv of the one command of ``source`` (e.g. ``'README.md'``)
    that starts with ``prefix``, as bash splits it, with ``python`` as this
    interpreter and the words in ``replace`` (placeholders such as
    ``IMAGE``, or paths of a full-length run) replaced. End-to-end tests run
    documented commands through this, so the docs cannot drift from what
    runs; they append only options that shorten or redirect the run."""
    found = [command for path, command in documented_commands()
             if str(path) == source
             and ' '.join(command.split()).startswith(prefix)]
    assert len(found) == 1, f'{source}: commands starting with {prefix!r}: ' \
        f'{found} (expected exactly one)'
    words = [(replace or {}).get(word, word)
             for word in shlex.split(found[0])]
    return [sys.executable, *words[1:]] if words[0] == 'python' else words
