"""What the CPU cannot check, on the visible CUDA GPUs (docs/gpu.md).

1. Training: ``--iters`` steps of the demo CGRSeg-T (SyncBN, on the
   generated SyntheticShapes data) on every visible GPU through
   ``tools/dist_train.sh`` (NCCL), in fp32 and with ``--amp`` (fp16,
   ``NonFiniteSkipAmpOptimWrapper``): loss curves side by side, skipped
   steps, whether the final BN statistics are finite.
2. Speed: ``benchmark.py`` on the 512² ADE20K CGRSeg-T, inference and
   training, fp32 and fp16, beside the paper's 138.4 img/s (its GPU).
3. ONNX: the fp32 run's checkpoint exported by ``pytorch2onnx.py`` and run by
   ONNX Runtime's CUDA provider against PyTorch on the GPU (max |Δ logits|,
   labels equal, median latency).

Without a visible GPU it says so in one line and exits with status 2.

    python tools/analysis_tools/gpu_check.py [--iters 300] [--work-dir DIR]
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List

import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(REPO, 'configs', 'cgrseg', 'cgrseg_efficientformerv2-s1_'
                '1xb8-adamw-300iter_shapes-128x128.py')
ADE_T = osp.join(REPO, 'configs', 'cgrseg', 'cgrseg_efficientformerv2-s1_'
                 '4xb4-adamw-160k_ade20k-512x512.py')
PAPER_IMG_S = 138.4  # CGRSeg-T, 512², fp32, the paper's Table (its GPU)


def read_scalars(lines: List[str]) -> Dict[str, list]:
    """MMEngine's ``vis_data/scalars.json`` lines → the training losses by
    iteration and the last count of skipped steps (0 if none was)."""
    losses, skipped = [], 0
    for line in lines:
        record = json.loads(line)
        if 'loss' in record and 'iter' in record:
            losses.append((record['iter'], record['loss']))
            skipped = int(record.get('skipped_steps', skipped))
    return dict(losses=losses, skipped=skipped)


def training_table(runs: Dict[str, dict], rows: int = 10) -> str:
    """Markdown: the loss of each run at ``rows`` evenly spaced iterations,
    then skipped steps and finite BN statistics per run."""
    names = list(runs)
    iters = sorted({i for run in runs.values() for i, _ in run['losses']})
    step = max(1, len(iters) // rows)
    shown = iters[step - 1::step][:rows]
    if iters and iters[-1] not in shown:
        shown.append(iters[-1])
    lines = ['| iteration | ' + ' | '.join(names) + ' |',
             '|---:|' + '---:|' * len(names)]
    by_iter = {n: dict(run['losses']) for n, run in runs.items()}
    for i in shown:
        cells = [f'{by_iter[n][i]:.4f}' if i in by_iter[n] else '-'
                 for n in names]
        lines.append(f'| {i} | ' + ' | '.join(cells) + ' |')
    lines.append('| skipped steps | ' + ' | '.join(
        str(runs[n]['skipped']) for n in names) + ' |')
    lines.append('| BN statistics finite | ' + ' | '.join(
        'yes' if runs[n]['bn_finite'] else 'NO' for n in names) + ' |')
    return '\n'.join(lines)


def bn_statistics_finite(checkpoint: str) -> bool:
    state = torch.load(checkpoint, map_location='cpu',
                       weights_only=True)['state_dict']
    return all(
        torch.isfinite(v).all() for k, v in state.items()
        if k.endswith(('running_mean', 'running_var')))


def train(work_dir: str, data_root: str, gpus: int, iters: int,
          amp: bool) -> dict:
    config = osp.join(work_dir, 'syncbn_demo.py')
    with open(config, 'w') as f:
        f.write(f'_base_ = {DEMO!r}\n'
                "norm_cfg = dict(type='SyncBN', requires_grad=True)\n"
                'model = dict(backbone=dict(norm_cfg=norm_cfg), '
                'decode_head=dict(norm_cfg=norm_cfg))\n')
    run_dir = osp.join(work_dir, 'fp16' if amp else 'fp32')
    options = [
        f'{split}_dataloader.dataset.data_root={data_root}'
        for split in ('train', 'val', 'test')
    ] + [
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
        f'default_hooks.checkpoint.interval={iters}',
        'default_hooks.logger.interval=1', f'param_scheduler.1.end={iters}'
    ]
    subprocess.run(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), config,
                    str(gpus), '--work-dir', run_dir] +
                   (['--amp'] if amp else []) + ['--cfg-options'] + options,
                   cwd=REPO, check=True,
                   env=dict(os.environ, PYTHON=sys.executable))
    [scalars] = glob.glob(osp.join(run_dir, '*', 'vis_data', 'scalars.json'))
    with open(scalars) as f:
        run = read_scalars(f.readlines())
    run['checkpoint'] = osp.join(run_dir, f'iter_{iters}.pth')
    run['bn_finite'] = bn_statistics_finite(run['checkpoint'])
    return run


def onnx_on_cuda(work_dir: str, checkpoint: str) -> str:
    """The exported demo model under ONNX Runtime's CUDA provider against
    PyTorch (fp32, same GPU): parity and median latency."""
    import onnxruntime as ort

    from cgrseg.apis import init_segmentor
    from cgrseg.deploy import DeploySegmentor
    path = osp.join(work_dir, 'demo.onnx')
    subprocess.run([sys.executable, osp.join(REPO, 'tools', 'deployment',
                                             'pytorch2onnx.py'), DEMO,
                    checkpoint, '--out', path, '--shape', '128', '128',
                    '--output', 'both'], cwd=REPO, check=True)
    session = ort.InferenceSession(path, providers=['CUDAExecutionProvider'])
    if 'CUDAExecutionProvider' not in session.get_providers():
        return 'ONNX Runtime: no CUDA provider (pip install onnxruntime-gpu)'
    model = DeploySegmentor(init_segmentor(DEMO, checkpoint)).cuda()
    images = torch.rand(1, 3, 128, 128) * 255
    with torch.no_grad():
        expected = model(images.cuda())
    logits, labels = session.run(['logits', 'labels'],
                                 {'images': images.numpy()})
    gap = (torch.from_numpy(logits) - expected['logits'].cpu()).abs().max()
    same = (torch.from_numpy(labels) == expected['labels'].cpu()).float()
    times = []
    for _ in range(50):
        start = time.perf_counter()
        session.run(['labels'], {'images': images.numpy()})
        times.append(time.perf_counter() - start)
    return (f'ONNX Runtime CUDA vs PyTorch fp32 at 128²: max |Δ logits| '
            f'{gap:.2e}, labels equal {same.mean():.2%}, median '
            f'{sorted(times)[25] * 1e3:.2f} ms')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--iters', type=int, default=300)
    parser.add_argument('--work-dir', default='work_dirs/gpu_check')
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print('gpu_check.py: no CUDA GPU is visible '
              '(torch.cuda.is_available() is False); run it on a machine '
              'with one.', file=sys.stderr)
        sys.exit(2)
    from cgrseg.datasets import generate_shapes
    gpus = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0)
    os.makedirs(args.work_dir, exist_ok=True)
    data_root = osp.join(args.work_dir, 'shapes')
    if not osp.isdir(data_root):
        generate_shapes(data_root)
    runs = {
        precision: train(args.work_dir, data_root, gpus, args.iters,
                         amp=precision == 'fp16')
        for precision in ('fp32', 'fp16')
    }
    print(f'\n## Training: demo CGRSeg-T, SyncBN, {gpus} x {name}, '
          f'{args.iters} iterations\n')
    print(training_table(runs))
    print(f'\n## Speed at 512² (ADE20K CGRSeg-T); the paper: '
          f'{PAPER_IMG_S} img/s for CGRSeg-T (fp32, its GPU); here {name}\n')
    subprocess.run([
        sys.executable,
        osp.join(REPO, 'tools', 'analysis_tools', 'benchmark.py'), ADE_T,
        '--mode', 'infer', 'train', '--precision', 'fp32', 'fp16',
        '--device', 'cuda', '--rounds', '3'
    ], cwd=REPO, check=True)
    print('\n## ONNX\n')
    print(onnx_on_cuda(args.work_dir, runs['fp32']['checkpoint']))


if __name__ == '__main__':
    main()
