"""Running the project's command-line tools in subprocesses for the
end-to-end tests, on the embedded demo dataset with tiny schedules."""
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = str(REPO / 'configs' / 'cgrseg' /
                  'cgrseg_efficientformerv2-s1_1xb8-adamw-300iter_'
                  'shapes-128x128.py')


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
