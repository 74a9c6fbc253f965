"""Write tests/data/timm_efficientformerv2_s0.pt: timm's own
EfficientFormerV2-S0 evaluated on fixed weights, the independent reference of
the timm-format converter (tests/test_converters.py). Not imported by the
test suite; run once where timm imports:

    pip install timm==0.9.0 --no-deps --target /tmp/timm_pkg
    PYTHONPATH=/tmp/timm_pkg:tests python tests/data/make_timm_fixture.py

timm 0.9.0 is the version the original CGRSeg ran with. timm imports
torchvision at module level, and no torchvision wheel loads beside the CPU
torch here: an import-only stub stands in for it (timm's model code never
calls torchvision).

Weights: ``timm_fixture_state_dict`` (tests/reference.py): every float entry
of timm's state dict is ``rule_tensor(key, shape)``, a function of key and
shape only, except the ImageNet position-bias tables ``attention_biases``,
which are zero: the segmentation backbone discards them (the original's quirk
Q5) and its own ``attention_biases_seg`` start at zero, so zero tables on
both sides make the outputs comparable. ``num_batches_tracked`` is 0.

The fixture stores the entries (key, shape, dtype) so that the test rebuilds
this state dict without timm, and the output of each of timm's 4 stages in
eval mode for a ``torch.randn(1, 3, 224, 224)`` input (generator seed 0):
shape, channel means and a strided subsample (7x7 spatial positions per
stage).
"""
from pathlib import Path

import torch

from helpers.torchvision_stub import stub_torchvision
from reference import timm_fixture_state_dict

ARCH = 's0'
INPUT_SHAPE = (1, 3, 224, 224)
INPUT_SEED = 0
OUT = Path(__file__).parent / f'timm_efficientformerv2_{ARCH}.pt'


def main() -> None:
    stub_torchvision()
    import timm
    model = timm.create_model(f'efficientformerv2_{ARCH}')
    entries = [(key, tuple(value.shape), str(value.dtype))
               for key, value in model.state_dict().items()]
    model.load_state_dict(timm_fixture_state_dict(entries), strict=True)
    model.eval()
    x = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(
        INPUT_SEED))
    stages = []
    with torch.no_grad():
        out = model.stem(x)
        for stage in model.stages:
            out = stage(out)
            step = out.shape[-1] // 7
            stages.append(
                dict(shape=tuple(out.shape), step=step,
                     sub=out[:, :, ::step, ::step].clone(),
                     channel_mean=out.mean((2, 3))))
    torch.save(
        dict(timm_version=timm.__version__,
             torch_version=str(torch.__version__), arch=ARCH, entries=entries,
             input=dict(shape=INPUT_SHAPE, seed=INPUT_SEED,
                        first8=x.flatten()[:8].clone()),
             stages=stages), OUT)
    print(f'wrote {OUT} ({OUT.stat().st_size} bytes)')


if __name__ == '__main__':
    main()
