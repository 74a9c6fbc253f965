"""Train several configs ("arms") over several seeds and compare them.

Each (arm, seed) run is ``tools/train.py CONFIG --cfg-options
randomness.seed=S ...`` in a fresh process with ``--threads`` threads,
``--jobs`` runs side by side, interleaved seed by seed (all arms of seed 0,
then of seed 1, ...) so that arms share the machine alike. A run validates
once, at its last iteration, on ``--split`` (``holdout`` for choosing
recipes, ``val`` for the table one reports). For every arm it prints the
final mIoU per seed, mean +- sample std, the paired gain over
``--baseline`` (same seed: same data order and initial student weights),
the median training time per iteration and its ratio to the baseline's.

``--equal-time ARM`` adds, after the other runs, the baseline trained for
as long as ARM took: ``round(iters * t_arm / t_baseline)`` iterations (the
ratio of the median seconds per iteration measured in this study), with
the baseline's schedule stretched to that length (its PolyLR ends at the
new last iteration; the warm-up is kept). ``--one-time ARM SECONDS`` counts
a cost ARM pays once before training (computing stored teacher targets)
in its time: ``round((iters * t_arm + SECONDS) / t_baseline)``. The ratio
is only as fair as the conditions the runs shared: keep the machine free
of other work.

    python tools/analysis_tools/seed_study.py --out work_dirs/study \\
        --seeds 0 1 2 3 4 --split val --baseline student \\
        --arm student configs/cgrseg/cgrseg_efficientformerv2-s1_1xb8-adamw-300iter_shapes-128x128.py \\
        --arm kd configs/distill/kd_segnext-t-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py \\
        --equal-time kd

Words after an arm's config are ``--cfg-options`` of that arm (e.g.
``model.teacher.checkpoint=PATH``). Finished runs are kept in
``OUT/<arm>/seed<S>/result.json`` and not run again, so an interrupted
study continues where it stopped; checkpoints are deleted after each run
unless ``--keep-checkpoints``. The table is also written to
``OUT/summary.md``. Figures are measured, not asserted: quote them with the
machine they came from.
"""
import argparse
import glob
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(REPO, 'tools', 'train.py')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='study folder')
    parser.add_argument(
        '--arm', nargs='+', action='append', required=True,
        metavar='NAME CONFIG [KEY=VALUE ...]',
        help='an arm: its name, config and optional cfg-options')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument(
        '--split', default='holdout',
        help='the SyntheticShapes split to validate on (default: holdout)')
    parser.add_argument('--baseline', help='arm the gains are taken over '
                        '(default: the first arm)')
    parser.add_argument(
        '--equal-time', nargs='+', default=[], metavar='ARM',
        help='also train the baseline for as long as each ARM took')
    parser.add_argument(
        '--one-time', nargs=2, action='append', default=[],
        metavar=('ARM', 'SECONDS'),
        help='seconds ARM spends once before training, counted in its '
        'time for --equal-time (e.g. computing stored teacher targets)')
    parser.add_argument('--jobs', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--keep-checkpoints', action='store_true')
    args = parser.parse_args()
    for arm in args.arm:
        if len(arm) < 2:
            parser.error(f'--arm {" ".join(arm)}: give a name and a config')
    names = [arm[0] for arm in args.arm]
    args.baseline = args.baseline or names[0]
    for name in [args.baseline, *args.equal_time,
                 *(arm for arm, _ in args.one_time)]:
        if name not in names:
            parser.error(f'{name!r} is not one of the arms {names}')
    try:
        args.one_time = {arm: float(s) for arm, s in args.one_time}
    except ValueError:
        parser.error('--one-time ARM SECONDS: SECONDS must be a number')
    return args


class Run:
    """One (arm, seed) training run and its result."""

    def __init__(self, arm: str, config: str, options: Sequence[str],
                 seed: int, out: str):
        self.arm, self.config, self.seed = arm, config, seed
        self.options = list(options)
        self.work_dir = osp.join(out, arm, f'seed{seed}')
        self.result_file = osp.join(self.work_dir, 'result.json')

    @property
    def result(self) -> Optional[Dict]:
        if not osp.exists(self.result_file):
            return None
        with open(self.result_file) as f:
            return json.load(f)

    def command(self, split: str) -> List[str]:
        cfg = Config.fromfile(self.config)
        max_iters = _max_iters(cfg, self.options)
        return [
            sys.executable, TRAIN, self.config, '--work-dir', self.work_dir,
            '--cfg-options', f'randomness.seed={self.seed}',
            f'train_cfg.val_interval={max_iters}',
            f'default_hooks.checkpoint.interval={max_iters}',
            f'val_dataloader.dataset.data_prefix.img_path=img_dir/{split}',
            f'val_dataloader.dataset.data_prefix.seg_map_path=ann_dir/{split}',
            'default_hooks.visualization.draw=False', *self.options
        ]

    def collect(self, wall: float) -> Dict:
        """Final mIoU and training speed from MMEngine's scalars.json."""
        logs = sorted(glob.glob(
            osp.join(self.work_dir, '*', 'vis_data', 'scalars.json')))
        with open(logs[-1]) as f:
            records = [json.loads(line) for line in f]
        mious = [r['mIoU'] for r in records if 'mIoU' in r]
        # The first logged window holds the start-up (data workers, first
        # iterations' allocations): left out of the per-iteration time.
        times = [r['time'] for r in records if 'time' in r and 'mIoU' not in r]
        return dict(
            mIoU=mious[-1],
            s_per_iter=statistics.median(times[1:] or times),
            # as configured: the log only holds every logger.interval-th
            iters=_max_iters(Config.fromfile(self.config), self.options),
            wall_s=round(wall, 1))


def _max_iters(cfg: Config, options: Sequence[str]) -> int:
    for option in options:
        if option.startswith('train_cfg.max_iters='):
            return int(option.split('=', 1)[1])
    return cfg.train_cfg.max_iters


def stretched_options(config: str, old: int, iters: int) -> List[str]:
    """cfg-options training ``config`` for ``iters`` instead of ``old``
    iterations with the same schedule shape: every scheduler that ended at
    the last iteration ends at the new one."""
    cfg = Config.fromfile(config)
    options = [f'train_cfg.max_iters={iters}']
    for i, scheduler in enumerate(cfg.param_scheduler):
        if scheduler.get('end') == old:
            options.append(f'param_scheduler.{i}.end={iters}')
    return options


def equal_time_iters(iters: int, arm_s_per_iter: float,
                     base_s_per_iter: float, one_time_s: float = 0.0) -> int:
    """Baseline iterations that take as long as ``iters`` iterations of an
    arm plus its one-time cost."""
    return round((iters * arm_s_per_iter + one_time_s) / base_s_per_iter)


def run_all(runs: List[Run], args: argparse.Namespace) -> None:
    todo = [run for run in runs if run.result is None]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    active = []
    done = len(runs) - len(todo)
    while todo or active:
        while todo and len(active) < args.jobs:
            run = todo.pop(0)
            os.makedirs(run.work_dir, exist_ok=True)
            log = open(osp.join(run.work_dir, 'train.log'), 'w')
            proc = subprocess.Popen(run.command(args.split), cwd=os.getcwd(),
                                    env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
            active.append((run, proc, log, time.perf_counter()))
        time.sleep(2)
        for item in list(active):
            run, proc, log, start = item
            if proc.poll() is None:
                continue
            active.remove(item)
            log.close()
            done += 1
            prefix = f'[{done}/{len(runs)}] {run.arm} seed {run.seed}'
            if proc.returncode != 0:
                print(f'{prefix}: FAILED (exit {proc.returncode}), see '
                      f'{osp.join(run.work_dir, "train.log")}', flush=True)
                continue
            result = run.collect(time.perf_counter() - start)
            with open(run.result_file, 'w') as f:
                json.dump(result, f)
            if not args.keep_checkpoints:
                for ckpt in glob.glob(osp.join(run.work_dir, '*.pth')):
                    os.remove(ckpt)
            print(f'{prefix}: mIoU {result["mIoU"]:.2f} after '
                  f'{result["iters"]} iterations, '
                  f'{result["s_per_iter"]:.3f} s/iter, '
                  f'{result["wall_s"]:.0f} s', flush=True)


def _mean_std(values: List[float]) -> str:
    if not values:
        return '-'
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.mean(values):.2f} ± {std:.2f}'


def summary(arms: List[str], runs: List[Run], baseline: str,
            seeds: List[int]) -> str:
    results = {(r.arm, r.seed): r.result for r in runs if r.result}
    base_time = statistics.median(
        [results[(baseline, s)]['s_per_iter'] for s in seeds
         if (baseline, s) in results] or [float('nan')])
    lines = [
        '| arm | iterations | ' + ' | '.join(f'seed {s}' for s in seeds) +
        f' | mean ± std | gain over {baseline} | s/iter | time ratio |',
        '| --- | :---: | ' + ' | '.join(':---:' for _ in seeds) +
        ' | :---: | :---: | :---: | :---: |'
    ]
    for arm in arms:
        got = [results.get((arm, s)) for s in seeds]
        mious = [r['mIoU'] for r in got if r]
        gains = [
            results[(arm, s)]['mIoU'] - results[(baseline, s)]['mIoU']
            for s in seeds
            if (arm, s) in results and (baseline, s) in results
        ]
        iters = sorted({r['iters'] for r in got if r})
        s_per_iter = statistics.median(
            [r['s_per_iter'] for r in got if r] or [float('nan')])
        lines.append(
            f'| {arm} | {"/".join(map(str, iters)) or "-"} | ' +
            ' | '.join(f'{r["mIoU"]:.2f}' if r else '-' for r in got) +
            f' | {_mean_std(mious)} | '
            f'{_mean_std(gains) if arm != baseline else "-"} | '
            f'{s_per_iter:.3f} | {s_per_iter / base_time:.2f} |')
    return '\n'.join(lines)


def main() -> None:
    args = parse_args()
    arms = {arm[0]: (arm[1], arm[2:]) for arm in args.arm}
    runs = [
        Run(name, config, options, seed, args.out) for seed in args.seeds
        for name, (config, options) in arms.items()
    ]
    run_all(runs, args)
    names = list(arms)
    config, options = arms[args.baseline]
    base_iters = _max_iters(Config.fromfile(config), options)
    timed = []
    for target in args.equal_time:
        times = {
            name: [run.result['s_per_iter'] for run in runs
                   if run.arm == name and run.result]
            for name in (target, args.baseline)
        }
        if not all(times.values()):
            continue
        iters = equal_time_iters(base_iters, statistics.median(times[target]),
                                 statistics.median(times[args.baseline]),
                                 args.one_time.get(target, 0.0))
        name = f'{args.baseline}@time({target})'
        names.append(name)
        stretched = [*options, *stretched_options(config, base_iters, iters)]
        timed += [
            Run(name, config, stretched, seed, args.out)
            for seed in args.seeds
        ]
    run_all(timed, args)
    table = summary(names, runs + timed, args.baseline, args.seeds)
    with open(osp.join(args.out, 'summary.md'), 'w') as f:
        f.write(f'split: {args.split}, {args.threads} thread(s) per run, '
                f'{args.jobs} runs side by side\n\n{table}\n')
    print(table)


if __name__ == '__main__':
    main()
