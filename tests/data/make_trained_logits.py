"""Write tests/data/trained_demo_logits.pt: logits of a segmentor trained on
the demo data, for the label-stage tests (tests/test_deploy.py): labels
from the pruned ``upsample_argmax`` must equal interpolating every class on
what a trained model predicts, not only on synthetic fields. Not imported
by the test suite; run once with a trained demo teacher:

    python tools/train.py configs/distill/teachers/cgrseg_efficientformerv2-l_1xb8-adamw-600iter_shapes-128x128.py
    PYTHONPATH=projects python tests/data/make_trained_logits.py \\
        work_dirs/cgrseg_efficientformerv2-l_1xb8-adamw-600iter_shapes-128x128/iter_600.pth \\
        [--full FILE.pt]

The image is a 1024×2048 mosaic of 8×16 demo validation scenes (seeds of
the val split, in order). Each 128×128 scene is run through the backbone
and head (the model was trained on 128×128 crops: on the whole mosaic at
once it labels 22 % of the pixels right, scene by scene 97 %), and the
logits at stride 8 are put together: (1, 5, 128, 256). The fixture keeps two
(1, 5, 48, 64) crops of them (rows 0-47 and 80-127, columns 0-63 and
192-255) as float16, stacked to (2, 5, 48, 64); ``--full`` also saves the
whole map (float32) for timing the label stage at 1024×2048.
"""
import argparse
from pathlib import Path

import torch

CONFIG = ('configs/distill/teachers/cgrseg_efficientformerv2-l_1xb8-'
          'adamw-600iter_shapes-128x128.py')
OUT = Path(__file__).parent / 'trained_demo_logits.pt'


def scene_logits(model, seed: int) -> torch.Tensor:
    """(1, 5, 16, 16) logits of one demo scene."""
    from cgrseg.datasets.shapes import make_sample
    image = torch.from_numpy(make_sample(seed)[0]).permute(2, 0, 1)[None]
    pre = model.data_preprocessor  # BGR -> RGB, then (x - mean) / std
    inputs = (image[:, [2, 1, 0]].float() - pre.mean) / pre.std
    with torch.no_grad():
        return model.decode_head.forward(model.extract_feat(inputs))


def mosaic_logits(model, rows: int = 8, cols: int = 16) -> torch.Tensor:
    from cgrseg.datasets.shapes import SPLITS
    offset = SPLITS['val'][1]
    tiles = [scene_logits(model, offset + i) for i in range(rows * cols)]
    return torch.cat([
        torch.cat(tiles[r * cols:(r + 1) * cols], dim=3) for r in range(rows)
    ], dim=2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('checkpoint')
    parser.add_argument('--full', help='also save the whole logits map')
    args = parser.parse_args()
    from cgrseg.apis import init_segmentor
    model = init_segmentor(CONFIG, args.checkpoint)
    logits = mosaic_logits(model)
    assert logits.shape == (1, 5, 128, 256), logits.shape
    if args.full:
        torch.save(logits.clone(), args.full)
    crops = torch.cat([logits[..., 0:48, 0:64], logits[..., 80:128,
                                                          192:256]])
    torch.save(crops.half().clone(), OUT)
    print(f'wrote {OUT}: {tuple(crops.shape)} float16')


if __name__ == '__main__':
    main()
