"""Train a segmentor with MMEngine's Runner.

mmseg's ``tools/train.py`` plus what CGRSeg users need: ``--amp`` picks
fp16 ``NonFiniteSkipAmpOptimWrapper`` on CUDA and bfloat16
``CPUAmpOptimWrapper`` on CPU;
SyncBN becomes BN where it cannot run (no CUDA); ``--resume`` checks the
checkpoint it resumes from; missing datasets, inconsistent classes and
faulty data files are reported before the first iteration; a
missing config file, a config key that its class does not take and a
checkpoint that cannot be written (e.g. a full disk) end in one line, not
a traceback. Stopped by SIGTERM (see ``SignalStopHook``; also during
validation), it saves a checkpoint and exits with status 143.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
"""
import argparse
import os

from cgrseg.datasets import check_data_roots, check_dataset_config
from cgrseg.engine import (CheckpointWriteError, TrainingStopped,
                           signal_exit_status)
from cgrseg.engine.library_notices import library_warnings_ignored
from cgrseg.engine.tool_setup import (add_runner_arguments, build_runner,
                                      check_resume_checkpoint,
                                      config_key_errors, configure_amp,
                                      init_cpu_distributed, load_tool_config)
from cgrseg.models.utils.checkpoint import CheckpointError


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        help='resume from CKPT, or without a value from the latest '
        'checkpoint in the work dir')
    parser.add_argument(
        '--amp', action='store_true',
        help='mixed precision: fp16 on CUDA, bfloat16 on CPU')
    add_runner_arguments(parser, 'train_cfg.max_iters=100')
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    try:
        cfg = load_tool_config(args.config, args.launcher, args.cfg_options,
                               args.work_dir)
        configure_amp(cfg, enable=args.amp)
        init_cpu_distributed(cfg)
        if args.resume is not None:
            cfg.resume = True
            cfg.load_from = check_resume_checkpoint(
                cfg.work_dir, None if args.resume == 'auto' else args.resume)
        check_data_roots(cfg, splits=('train', 'val'))
        check_dataset_config(cfg, splits=('train', 'val'))
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f'tools/train.py: {err}') from None
    with config_key_errors('tools/train.py', cfg):
        runner = build_runner(cfg)
        try:
            runner.train()
        except (CheckpointWriteError, CheckpointError) as err:
            raise SystemExit(f'tools/train.py: {err}') from None
        except TrainingStopped:  # a signal during validation: saved
            pass
    status = signal_exit_status(runner)
    if status:
        raise SystemExit(status)


if __name__ == '__main__':
    with library_warnings_ignored():
        main()
