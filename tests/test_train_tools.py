"""End to end: tools/train.py and tools/test.py on the embedded demo data,
kill-and-resume, 2-process DDP on CPU (gloo), mim, and the inference APIs."""
import glob
import json
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from e2e import DEMO_CONFIG, REPO, documented, python, run, tiny_schedule

KD_DEMO = str(REPO / 'configs' / 'distill' /
              'kd_cgrseg-l-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py')


@pytest.fixture(scope='session')
def data_root(tmp_path_factory):
    from cgrseg.datasets import generate_shapes
    root = str(tmp_path_factory.mktemp('data') / 'shapes')
    generate_shapes(root)
    return root


@pytest.fixture(scope='session')
def demo_run(tmp_path_factory, data_root):
    """The README's first command, shortened to 8 iterations with
    checkpoints and validation at 4 and 8."""
    work_dir = str(tmp_path_factory.mktemp('demo_run'))
    command = documented('README.md', 'python tools/train.py configs/cgrseg/')
    proc = run(command + ['--work-dir', work_dir, '--cfg-options',
                          *tiny_schedule(data_root)])
    return work_dir, proc


def final_miou(work_dir: str) -> float:
    scalars = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                        'scalars.json')))
    lines = [json.loads(line) for line in open(scalars[-1])]
    return [entry['mIoU'] for entry in lines if 'mIoU' in entry][-1]


def miou_by_hand(checkpoint: str, data_root: str) -> float:
    """mIoU (%) of the checkpoint on the demo val split, counted here from
    ``inference_model``'s label maps: per-class intersection over union of
    pixels summed over all images, mean over classes that occur."""
    import mmcv
    import numpy as np
    from mmseg.apis import inference_model, init_model
    model = init_model(DEMO_CONFIG, checkpoint, device='cpu')
    num_classes = len(model.dataset_meta['classes'])
    intersect, union = np.zeros(num_classes), np.zeros(num_classes)
    for image in sorted(glob.glob(osp.join(data_root, 'img_dir', 'val',
                                           '*.png'))):
        pred = inference_model(model, image).pred_sem_seg.data[0].numpy()
        label = mmcv.imread(image.replace('img_dir', 'ann_dir'),
                            flag='unchanged')
        for c in range(num_classes):
            intersect[c] += np.sum((pred == c) & (label == c))
            union[c] += np.sum((pred == c) | (label == c))
    with np.errstate(invalid='ignore'):
        return float(np.nanmean(intersect / union) * 100)


@pytest.mark.e2e
def test_train_writes_checkpoints_logs_metrics_and_pictures(demo_run,
                                                            data_root):
    work_dir, proc = demo_run
    for name in ('iter_4.pth', 'iter_8.pth', 'last_checkpoint'):
        assert osp.exists(osp.join(work_dir, name)), name
    log = open(glob.glob(osp.join(work_dir, '*', '*.log'))[0]).read()
    assert 'Iter(train) [8/8]' in log and 'eta:' in log
    assert 'mIoU' in log
    pictures = glob.glob(
        osp.join(work_dir, '*', 'vis_data', 'vis_image', '*.png'))
    assert pictures, 'SegVisualizationHook wrote no prediction/GT pictures'
    # The validation at iteration 8 scored the weights saved in iter_8.pth.
    assert final_miou(work_dir) == pytest.approx(
        miou_by_hand(osp.join(work_dir, 'iter_8.pth'), data_root), abs=0.02)
    ckpt = torch.load(osp.join(work_dir, 'iter_8.pth'), weights_only=True)
    assert ckpt['meta']['iter'] == 8 and 'rng_state' in ckpt


@pytest.mark.e2e
def test_train_console_shows_progress_not_internals(demo_run):
    """The console has the optimizer's groups in a few lines, not a line per
    parameter, and no warnings about the libraries' internals."""
    _, proc = demo_run
    console = proc.stdout + proc.stderr
    assert 'paramwise_options' not in console
    assert 'AdamW parameter groups' in console
    assert 'lr=0.02 weight_decay=0.01' in console  # the head's lr x10
    warnings = [line for line in console.splitlines()
                if 'WARNING' in line or 'Warning' in line]
    # tiny_schedule asks for deterministic=True, which MMEngine announces.
    assert all('cudnn.benchmark' in line for line in warnings), warnings


@pytest.mark.e2e
def test_test_tool_evaluates_and_paints(demo_run, data_root, tmp_path):
    work_dir, _ = demo_run
    proc = run(python('tools/test.py', DEMO_CONFIG,
                      osp.join(work_dir, 'iter_8.pth'), '--work-dir',
                      str(tmp_path), '--show-dir', 'painted',
                      '--cfg-options',
                      f'test_dataloader.dataset.data_root={data_root}'))
    assert 'mIoU' in proc.stdout + proc.stderr
    painted = glob.glob(str(tmp_path / 'painted' / '**' / '*.png'),
                        recursive=True)
    assert len(painted) == 24


@pytest.mark.e2e
def test_test_tool_tta_runs_multi_scale_flip(demo_run, data_root, tmp_path):
    from mmengine.config import Config
    work_dir, _ = demo_run
    proc = run(python('tools/test.py', DEMO_CONFIG,
                      osp.join(work_dir, 'iter_8.pth'), '--tta',
                      '--work-dir', str(tmp_path), '--cfg-options',
                      f'test_dataloader.dataset.data_root={data_root}',
                      'test_dataloader.dataset.indices=2'))
    assert 'Iter(test) [2/2]' in proc.stdout and 'mIoU' in proc.stdout
    ran = Config.fromfile(str(tmp_path / osp.basename(DEMO_CONFIG)))
    assert ran.model.type == 'SegTTAModel'
    assert ran.model.module.type == 'EncoderDecoder'
    [tta] = [t for t in ran.test_dataloader.dataset.pipeline
             if t['type'] == 'TestTimeAug']
    assert len(tta['transforms'][0]) == 6  # scales
    assert len(tta['transforms'][1]) == 2  # without and with flip


@pytest.mark.e2e
@pytest.mark.parametrize('key', ['tta_pipeline', 'tta_model'])
def test_test_tool_tta_without_tta_config_is_a_clear_error(
        key, demo_run, data_root, tmp_path):
    work_dir, _ = demo_run
    proc = run(python('tools/test.py', DEMO_CONFIG,
                      osp.join(work_dir, 'iter_8.pth'), '--tta',
                      '--work-dir', str(tmp_path), '--cfg-options',
                      f'test_dataloader.dataset.data_root={data_root}',
                      f'{key}=None'), check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert f'--tta needs {key} in the config' in proc.stderr
    assert 'SegTTAModel' in proc.stderr


@pytest.mark.e2e
def test_test_tool_rejects_a_checkpoint_of_another_model(tmp_path, data_root):
    from reference import build_reference_model
    model_b, _ = build_reference_model('b')
    path = str(tmp_path / 'cgrseg_b.pth')
    torch.save(dict(state_dict=model_b.state_dict()), path)
    proc = run(python('tools/test.py', DEMO_CONFIG, path, '--cfg-options',
                      f'test_dataloader.dataset.data_root={data_root}'),
               check=False)
    assert proc.returncode != 0
    assert 'does not fit this model' in proc.stderr
    assert 'EfficientFormerV2-s2 (CGRSeg-B)' in proc.stderr


@pytest.mark.e2e
def test_missing_data_root_is_one_clear_error(tmp_path):
    missing = str(tmp_path / 'ade' / 'ADEChallengeData2016')
    config = DEMO_CONFIG.replace(
        'cgrseg_efficientformerv2-s1_1xb8-adamw-300iter_shapes-128x128',
        'cgrseg_efficientformerv2-s1_4xb4-adamw-160k_ade20k-512x512')
    proc = run(python('tools/train.py', config, '--work-dir', str(tmp_path),
                      '--cfg-options',
                      f'train_dataloader.dataset.data_root={missing}',
                      f'val_dataloader.dataset.data_root={missing}'),
               check=False)
    assert proc.returncode != 0
    assert missing in proc.stderr and 'Traceback' not in proc.stderr
    assert 'ADEChallengeData2016.zip' in proc.stderr


@pytest.mark.e2e
@pytest.mark.parametrize('tool', ['train', 'test'])
def test_missing_config_is_one_clear_error(tool):
    typo = DEMO_CONFIG.replace('128x128.py', '128x12.py')
    proc = run(python(f'tools/{tool}.py', typo,
                      *(['ckpt.pth'] if tool == 'test' else [])),
               check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f'tools/{tool}.py: config file {typo!r} not found (relative paths '
        f'are relative to the working directory, {REPO}). Did you mean '
        f'{DEMO_CONFIG}?')


@pytest.mark.e2e
@pytest.mark.parametrize('tool,option,cls,valid', [
    ('train', 'train_cfg.max_iter=2', 'IterBasedTrainLoop', 'max_iters'),
    ('test', 'model.backbone.archh=s1', 'EfficientFormerV2', 'arch'),
    ('test', 'test_cfg.fp16x=True', 'TestLoop', 'fp16'),
])
def test_mistyped_config_key_is_one_clear_error(tool, option, cls, valid,
                                                demo_run, data_root,
                                                tmp_path):
    checkpoint = osp.join(demo_run[0], 'iter_8.pth')
    proc = run(python(f'tools/{tool}.py', DEMO_CONFIG,
                      *([checkpoint] if tool == 'test' else []),
                      '--work-dir', str(tmp_path), '--cfg-options',
                      *tiny_schedule(data_root), option), check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    key = option.split('=')[0].split('.')[-1]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f'tools/{tool}.py: {cls} has no parameter '
                           f'{key!r}: check the config and --cfg-options')
    assert f' {valid},' in last or f' {valid}.' in last


def train_log_dirs(work_dir: str) -> set:
    """The per-run (timestamped) log folders in a work dir."""
    return {d for d in glob.glob(osp.join(work_dir, '*')) if osp.isdir(d)}


def distill_recipe(tmp_path) -> str:
    """The demo distillation recipe (logit KL and a feature mimic with a
    learned connector) with a random CGRSeg-T teacher, cheaper than its L."""
    from cgrseg.models.segmentors.teacher import build_teacher_model
    teacher = str(tmp_path / 'teacher.pth')
    torch.manual_seed(0)
    torch.save({'state_dict': build_teacher_model(DEMO_CONFIG).state_dict()},
               teacher)
    config = tmp_path / 'kd_t_to_t.py'
    config.write_text(
        f'_base_ = {KD_DEMO!r}\n'
        f'model = dict(\n'
        f'    teacher=dict(config={DEMO_CONFIG!r}, checkpoint={teacher!r}),\n'
        f'    distill_losses=[\n'
        f'        _base_.model.distill_losses[0],\n'
        f'        dict(_base_.model.distill_losses[1], teacher_channels=224)'
        f'])\n')
    return str(config)


@pytest.mark.e2e
@pytest.mark.parametrize('recipe', ['plain', 'distill'])
def test_kill_and_resume_matches_uninterrupted_run(recipe, demo_run,
                                                   data_root, tmp_path):
    """Killed after iter_4.pth, resumed from it (not from scratch: the
    demo run is deterministic, so only the log and the untouched iter_4.pth
    tell the two apart), and ends equal to the uninterrupted run: the
    student and, for distillation, the learned connectors."""
    if recipe == 'plain':
        config, reference_dir = DEMO_CONFIG, demo_run[0]
    else:
        config = distill_recipe(tmp_path)
        reference_dir = str(tmp_path / 'reference')
        run(python('tools/train.py', config, '--work-dir', reference_dir,
                   '--cfg-options', *tiny_schedule(data_root)))
    work_dir = str(tmp_path / 'work')
    args = python('tools/train.py', config, '--work-dir', work_dir,
                  '--cfg-options', *tiny_schedule(data_root))
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    # Its own process group: kill -9 reaches the data-loader workers too
    # (as a scheduler killing the job does), not only the main process.
    proc = subprocess.Popen(args, cwd=str(REPO), env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            start_new_session=True)
    marker = osp.join(work_dir, 'last_checkpoint')
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if osp.exists(marker) and 'iter_4' in open(marker).read():
            break
        time.sleep(0.05)
    assert proc.poll() is None, 'the run ended before it could be killed'
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # CheckpointHook writes last_checkpoint after the checkpoint itself.
    iter_4 = osp.join(work_dir, 'iter_4.pth')
    assert osp.exists(iter_4), 'no iter_4.pth when the run was killed'
    assert not osp.exists(osp.join(work_dir, 'iter_8.pth')), \
        'the run finished before it could be killed'
    before = (os.stat(iter_4).st_mtime_ns, open(iter_4, 'rb').read())
    killed_logs = train_log_dirs(work_dir)

    run(args[:args.index('--cfg-options')] + ['--resume'] +
        args[args.index('--cfg-options'):])
    assert (os.stat(iter_4).st_mtime_ns, open(iter_4, 'rb').read()) == \
        before, 'iter_4.pth was rewritten: training restarted from scratch'
    [resumed_log_dir] = train_log_dirs(work_dir) - killed_logs
    log = open(glob.glob(osp.join(resumed_log_dir, '*.log'))[0]).read()
    assert 'resumed epoch: 0, iter: 4' in log
    first_train_line = next(line for line in log.splitlines()
                            if 'Iter(train) [' in line)
    assert 'Iter(train) [5/8]' in first_train_line, first_train_line
    resumed = torch.load(osp.join(work_dir, 'iter_8.pth'), weights_only=True)
    reference = torch.load(osp.join(reference_dir, 'iter_8.pth'),
                           weights_only=True)
    parts = ['state_dict'] + (['distill_state_dict']
                              if recipe == 'distill' else [])
    for part in parts:
        assert list(resumed[part]) == list(reference[part])
        for key, value in reference[part].items():
            assert torch.equal(resumed[part][key], value), key
    assert final_miou(work_dir) == final_miou(reference_dir)


@pytest.mark.e2e
def test_resume_from_a_truncated_checkpoint_is_a_clear_error(
        demo_run, data_root, tmp_path):
    reference_dir, _ = demo_run
    good = open(osp.join(reference_dir, 'iter_4.pth'), 'rb').read()
    (tmp_path / 'iter_4.pth').write_bytes(good)
    (tmp_path / 'iter_8.pth').write_bytes(good[:len(good) // 3])
    proc = run(python('tools/train.py', DEMO_CONFIG, '--work-dir',
                      str(tmp_path), '--resume', str(tmp_path / 'iter_8.pth'),
                      '--cfg-options', *tiny_schedule(data_root)),
               check=False)
    assert proc.returncode != 0
    assert 'truncated, corrupt' in proc.stderr
    assert 'iter_4.pth' in proc.stderr  # the good one is offered
    assert (tmp_path / 'iter_4.pth').read_bytes() == good


@pytest.mark.e2e
def test_two_process_ddp_on_cpu(data_root, tmp_path):
    """Both ranks train inside MMDistributedDataParallel on disjoint samples
    and end with the same weights (gradients averaged over ranks)."""
    work_dir, probe = tmp_path / 'work', tmp_path / 'probe'
    probe.mkdir()
    config = tmp_path / 'ddp_probe.py'
    config.write_text(
        f'_base_ = {DEMO_CONFIG!r}\n'
        "custom_imports = dict(imports=['cgrseg', 'helpers.param_probe'])\n"
        "custom_hooks = _base_.custom_hooks + [dict(type='ParamProbeHook')]\n")
    run(['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir',
         str(work_dir), '--cfg-options', *tiny_schedule(data_root, 4, 4)],
        env=dict(CGRSEG_PROBE_DIR=str(probe), PYTHON=sys.executable,
                 PYTHONPATH=str(REPO / 'tests'),
                 PORT=str(29500 + os.getpid() % 1000)))
    seen = [json.loads((probe / f'rank{r}.json').read_text())
            for r in (0, 1)]
    assert [s['wrapper'] for s in seen] == ['MMDistributedDataParallel'] * 2
    # 4 iterations of batch 2 each, from one shuffled epoch split by rank.
    assert [len(s['samples']) for s in seen] == [8, 8]
    assert not set(seen[0]['samples']) & set(seen[1]['samples']), seen
    rank0 = torch.load(probe / 'rank0.pt', weights_only=True)
    rank1 = torch.load(probe / 'rank1.pt', weights_only=True)
    for key, value in rank0.items():
        if 'num_batches_tracked' in key or 'running_' in key:
            continue  # BN statistics are per process (plain BN on CPU)
        assert torch.equal(value, rank1[key]), key
    checkpoints = glob.glob(str(work_dir / '*.pth'))
    assert [osp.basename(c) for c in checkpoints] == ['iter_4.pth']
    logs = glob.glob(str(work_dir / '*' / '*.log'))
    assert len(logs) == 1, logs


@pytest.mark.parametrize('script,min_args', [
    ('dist_train.sh', 2), ('dist_test.sh', 3), ('slurm_train.sh', 3),
    ('slurm_test.sh', 4)])
def test_launch_scripts_print_their_usage(script, min_args):
    proc = run(['bash', f'tools/{script}', '--help'])
    assert proc.stdout.startswith('usage: ') and script in proc.stdout
    proc = run(['bash', f'tools/{script}', *['x'] * (min_args - 1)],
               check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith('usage: ') and script in proc.stderr
    assert proc.stdout == '' and proc.stderr.count('\n') == 1


@pytest.mark.e2e
def test_dist_scripts_find_the_repository_venv(tmp_path):
    """$PYTHON if set, else <repo>/.venv/bin/python, else python on PATH
    (here a stub without torch)."""
    repo = tmp_path / 'repo'
    (repo / 'tools').mkdir(parents=True)
    for name in ('dist_test.sh', 'find_python.sh', 'test.py'):
        shutil.copy(REPO / 'tools' / name, repo / 'tools' / name)
    venv_python = repo / '.venv' / 'bin' / 'python'
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    stub = tmp_path / 'stub' / 'python'
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\necho "python on PATH"; exit 3\n')
    for path in (venv_python, stub):
        path.chmod(0o755)
    args = ['bash', str(repo / 'tools' / 'dist_test.sh'), DEMO_CONFIG,
            'ckpt.pth', '1', '--help']
    env = dict(PATH=f'{stub.parent}:{os.environ["PATH"]}', PYTHON='',
               PORT=str(29500 + (os.getpid() + 1) % 1000))
    proc = run(args, env=env)  # torchrun runs tools/test.py --help
    assert 'Test a segmentor' in proc.stdout
    proc = run(args, env=dict(env, PYTHON=str(stub)), check=False)
    assert proc.returncode == 3 and 'python on PATH' in proc.stdout
    shutil.rmtree(repo / '.venv')
    proc = run(args, env=env, check=False)
    assert proc.returncode == 3 and 'python on PATH' in proc.stdout


@pytest.mark.e2e
def test_inference_apis_and_demo_script(demo_run, data_root, tmp_path):
    from mmengine.config import Config
    from mmseg.apis import MMSegInferencer, inference_model, init_model
    work_dir, _ = demo_run
    checkpoint = osp.join(work_dir, 'iter_8.pth')
    image = osp.join(data_root, 'img_dir', 'val', '0000.png')
    cfg = Config.fromfile(DEMO_CONFIG)
    model = init_model(cfg, checkpoint, device='cpu')
    result = inference_model(model, image)
    assert result.pred_sem_seg.data.shape == (1, 128, 128)
    assert model.dataset_meta['classes'][1] == 'disc'

    inferencer = MMSegInferencer(model=DEMO_CONFIG, weights=checkpoint,
                                 device='cpu')
    out = inferencer(image, return_datasamples=True)
    assert torch.equal(out.pred_sem_seg.data, result.pred_sem_seg.data)

    out_file = str(tmp_path / 'overlay.png')
    run(documented('README.md', 'python demo/image_demo.py', {
        'IMAGE': image, 'CONFIG': DEMO_CONFIG, 'CKPT': checkpoint,
        'result.png': out_file}))
    assert osp.getsize(out_file) > 0


@pytest.mark.e2e
@pytest.mark.parametrize('install', ['editable', 'regular'])
def test_mim_train_and_test(install, demo_run, data_root, tmp_path):
    """mim finds configs and tools in cgrseg/.mim: in the README's editable
    environment through the links tools/setup_env.sh makes, in a regular
    install through the copies setup.py ships."""
    env = None
    if install == 'regular':
        target = tmp_path / 'site'
        run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
             '--no-build-isolation', '--target', str(target), str(REPO)])
        env = dict(PYTHONPATH=str(target))
    mim = [sys.executable, '-m', 'mim']
    config = osp.basename(DEMO_CONFIG)
    run(mim + ['train', 'cgrseg', config, '--work-dir', str(tmp_path / 'w'),
               '--cfg-options', *tiny_schedule(data_root, 2, 2),
               'val_dataloader.dataset.indices=2'],
        env=env, cwd=str(tmp_path))
    assert osp.exists(tmp_path / 'w' / 'iter_2.pth')
    proc = run(mim + ['test', 'cgrseg', config, '--checkpoint',
                      str(tmp_path / 'w' / 'iter_2.pth'), '--cfg-options',
                      f'test_dataloader.dataset.data_root={data_root}',
                      'test_dataloader.dataset.indices=2'],
               env=env, cwd=str(tmp_path))
    assert 'mIoU' in proc.stdout + proc.stderr
