"""Test (evaluate) a segmentor checkpoint with MMEngine's Runner.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out DIR]
        [--show-dir DIR] [--show] [--wait-time S] [--tta]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]

The checkpoint is checked against the model first (strictly: missing,
unexpected and mis-shaped keys are counted and the first 8 of each named), so
a checkpoint of another model fails with an explanation instead of evaluating
partly random weights.
"""
import argparse
import os
import os.path as osp

import torch.nn as nn
from mmengine.config import Config

from cgrseg.datasets import check_data_roots, check_dataset_config
from cgrseg.engine.library_notices import library_warnings_ignored
from cgrseg.engine.tool_setup import (add_runner_arguments, build_runner,
                                      config_key_errors, init_cpu_distributed,
                                      load_tool_config)
from cgrseg.engine.unwrap import unwrap_model
from cgrseg.models.utils.checkpoint import (CheckpointError, read_checkpoint,
                                            segmentor_weights)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where to save the metrics')
    parser.add_argument(
        '--out', help='directory to save the predicted label maps')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory to save the painted images (a relative path is '
        'taken inside the work dir)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='seconds between shows')
    parser.add_argument(
        '--tta', action='store_true', help='test time augmentation')
    add_runner_arguments(parser, 'test_dataloader.batch_size=2')
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def check_checkpoint_fits(model: nn.Module, checkpoint: str) -> None:
    """Check strictly that the checkpoint fits the Runner's model (inside
    its DDP or test-time-augmentation wrapper), before the Runner loads it
    (leniently: MMEngine only warns about keys that do not fit)."""
    try:
        segmentor_weights(unwrap_model(model), read_checkpoint(checkpoint),
                          checkpoint)
    except (CheckpointError, FileNotFoundError) as err:
        raise SystemExit(f'tools/test.py: {err}') from None


def enable_visualization(cfg: Config, args: argparse.Namespace) -> None:
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise SystemExit('--show/--show-dir need the "visualization" entry '
                         '(SegVisualizationHook) in default_hooks.')
    hook.draw = True
    hook.interval = 1  # paint every test image
    if args.show:
        hook.show = True
        hook.wait_time = args.wait_time
    if args.show_dir:
        visualizer = cfg.visualizer
        visualizer.save_dir = osp.join(cfg.work_dir, args.show_dir)
        visualizer.vis_backends = [dict(type='LocalVisBackend')]


def enable_tta(cfg: Config, config: str) -> None:
    """``--tta``: the config's ``tta_pipeline`` for the test set and its
    ``tta_model`` around the model."""
    missing = [key for key in ('tta_pipeline', 'tta_model')
               if not cfg.get(key)]
    if missing:
        raise SystemExit(
            f'tools/test.py: --tta needs {" and ".join(missing)} in the '
            f"config, and {config} has none. Add mmseg's multi-scale + flip "
            "test to the config: tta_model = dict(type='SegTTAModel') (as in "
            'mmseg::_base_/default_runtime.py) and the tta_pipeline of '
            'mmseg::_base_/datasets/ade20k.py (TestTimeAug over '
            'Resize(scale_factor=0.5 ... 1.75) and RandomFlip).')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def main() -> None:
    args = parse_args()
    try:
        cfg = load_tool_config(args.config, args.launcher, args.cfg_options,
                               args.work_dir)
    except FileNotFoundError as err:
        raise SystemExit(f'tools/test.py: {err}') from None
    init_cpu_distributed(cfg)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta:
        enable_tta(cfg, args.config)
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    try:
        check_data_roots(cfg, splits=('test', ))
        check_dataset_config(cfg, splits=('test', ))
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f'tools/test.py: {err}') from None
    with config_key_errors('tools/test.py', cfg):
        runner = build_runner(cfg)
        check_checkpoint_fits(runner.model, args.checkpoint)
        runner.test()


if __name__ == '__main__':
    with library_warnings_ignored():
        main()
