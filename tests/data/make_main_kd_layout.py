"""Records main_kd_checkpoint_layout.json: the layout of a distillation
checkpoint as the project's main branch wrote it before the connectors
became part of the model's state_dict (main 8968ee5: student under
``state_dict``, connectors under ``distill_state_dict`` written by
DistillCheckpointHook). Runs main's demo recipe for one iteration with a
random teacher; made once with that checkout's environment:

    PYTHONDONTWRITEBYTECODE=1 /work/main/.venv/bin/python \\
        tests/data/make_main_kd_layout.py

and the JSON copied here from /tmp/mm_main/layout.json (reformatted one
entry a line)."""
import json, os, sys
sys.path[:0] = ['/work/main/projects', '/work/main/tests']
import torch
import cgrseg
assert cgrseg.__file__.startswith('/work/main/'), cgrseg.__file__
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from cgrseg.datasets import generate_shapes
from cgrseg.engine.tool_setup import configure_sync_bn
from cgrseg.models.segmentors.teacher import build_teacher_model
os.chdir('/work/main')
init_default_scope('mmseg')
out = '/tmp/mm_main'
generate_shapes(out + '/shapes')
recipe = 'configs/distill/kd_cgrseg-l-to-cgrseg-t_1xb8-adamw-300iter_shapes-128x128.py'
cfg = Config.fromfile(recipe)
torch.manual_seed(0)
torch.save({'state_dict': build_teacher_model(cfg.model.teacher.config).state_dict()}, out + '/teacher.pth')
cfg.model.teacher.checkpoint = out + '/teacher.pth'
configure_sync_bn(cfg)
cfg.merge_from_dict({
    'train_dataloader.dataset.data_root': out + '/shapes',
    'val_dataloader.dataset.data_root': out + '/shapes',
    'train_dataloader.batch_size': 2, 'train_cfg.max_iters': 1, 'train_cfg.val_interval': 1,
    'default_hooks.checkpoint.interval': 1, 'default_hooks.checkpoint.save_best': None,
    'default_hooks.visualization.draw': False, 'param_scheduler.1.end': 1})
for loader in (cfg.train_dataloader, cfg.val_dataloader):
    loader.num_workers = 0
    loader.persistent_workers = False
cfg.val_dataloader.dataset.indices = 2
cfg.work_dir = out + '/work'
Runner.from_cfg(cfg).train()
ckpt = torch.load(out + '/work/iter_1.pth', weights_only=True)
def layout(sd):
    return [[k, list(v.shape), str(v.dtype).replace('torch.', '')] for k, v in sd.items()]
recipe_out = dict(
    saved_by='main ' + os.popen('git -C /work/main rev-parse --short HEAD').read().strip(),
    recipe=recipe,
    top_level_keys=sorted(ckpt),
    state_dict=layout(ckpt['state_dict']),
    distill_state_dict=layout(ckpt['distill_state_dict']))
json.dump(recipe_out, open(out + '/layout.json', 'w'), indent=0)
print(sorted(ckpt), len(ckpt['state_dict']), list(ckpt['distill_state_dict']))
