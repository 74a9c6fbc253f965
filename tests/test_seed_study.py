"""tools/analysis_tools/seed_study.py: the parts that turn runs into the
table (the schedule stretched for equal-time runs, what is read from
MMEngine's logs, the paired gains), without training."""
import json
import statistics

import pytest
from mmengine.config import Config

from e2e import DEMO_CONFIG, load_script


@pytest.fixture(scope='module')
def study():
    return load_script('tools/analysis_tools/seed_study.py')


def test_equal_time_run_stretches_the_schedule(study):
    options = study.stretched_options(DEMO_CONFIG, 300, 390)
    assert options == ['train_cfg.max_iters=390', 'param_scheduler.1.end=390']
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.merge_from_dict(dict(o.split('=') for o in options))
    assert cfg.train_cfg.max_iters == '390'
    warmup, decay = cfg.param_scheduler
    assert (warmup.begin, warmup.end) == (0, 50)  # the warm-up is kept
    assert (decay.begin, decay.end) == (0, '390')


def test_run_validates_once_on_the_chosen_split(study, tmp_path):
    run = study.Run('kd', DEMO_CONFIG, ['train_cfg.max_iters=390'], 3,
                    str(tmp_path))
    command = run.command('holdout')
    assert command[command.index('--work-dir') + 1] == str(
        tmp_path / 'kd' / 'seed3')
    options = command[command.index('--cfg-options') + 1:]
    assert {'randomness.seed=3', 'train_cfg.val_interval=390',
            'val_dataloader.dataset.data_prefix.img_path=img_dir/holdout',
            'val_dataloader.dataset.data_prefix.seg_map_path=ann_dir/holdout',
            'train_cfg.max_iters=390'} <= set(options)


def write_scalars(work_dir, times, miou):
    """An MMEngine-style vis_data/scalars.json: one line per logged window
    and one for the validation."""
    log = work_dir / '20261202_000000' / 'vis_data'
    log.mkdir(parents=True)
    lines = [dict(lr=1e-3, time=t, iter=20 * (i + 1), step=20 * (i + 1))
             for i, t in enumerate(times)]
    lines.append(dict(aAcc=90.0, mIoU=miou, step=20 * len(times)))
    (log / 'scalars.json').write_text(
        '\n'.join(json.dumps(line) for line in lines))


def test_result_is_the_last_miou_and_the_steady_step_time(study, tmp_path):
    run = study.Run('a', DEMO_CONFIG, ['train_cfg.max_iters=89'], 0,
                    str(tmp_path))
    write_scalars(tmp_path / 'a' / 'seed0', [9.0, 1.0, 2.0, 3.0], 70.5)
    result = run.collect(wall=100.0)
    # the first window (start-up) is left out of the step time; the
    # iterations are the configured ones, not the last logged (80)
    assert result == dict(mIoU=70.5, s_per_iter=2.0, iters=89, wall_s=100.0)


def test_table_pairs_the_seeds(study, tmp_path):
    mious = {'a': [70.0, 66.0, 68.0], 'b': [71.0, 69.0, 68.5]}
    runs = []
    for arm, values in mious.items():
        for seed, miou in enumerate(values):
            run = study.Run(arm, DEMO_CONFIG, [], seed, str(tmp_path))
            (tmp_path / arm / f'seed{seed}').mkdir(parents=True)
            with open(run.result_file, 'w') as f:
                json.dump(dict(mIoU=miou, s_per_iter=1.0 if arm == 'a' else
                               1.5, iters=300, wall_s=1), f)
            runs.append(run)
    table = study.summary(['a', 'b'], runs, 'a', [0, 1, 2])
    row = table.splitlines()[3]
    gains = [1.0, 3.0, 0.5]
    assert (f'{statistics.mean(gains):.2f} ± {statistics.stdev(gains):.2f}'
            in row), table
    assert row.endswith('| 1.500 | 1.50 |'), table
    assert '| 68.00 ± 2.00 | - |' in table.splitlines()[2], table


def test_equal_time_counts_the_one_time_cost(study):
    # 300 steps of 1.1 s and 66 s once, in steps of 1.0 s
    assert study.equal_time_iters(300, 1.1, 1.0) == 330
    assert study.equal_time_iters(300, 1.1, 1.0, one_time_s=66.0) == 396
