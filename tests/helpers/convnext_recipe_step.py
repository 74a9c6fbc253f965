"""One real training step of the ConvNeXt-B UPerNet (mmpretrain) ->
CGRSeg-T ADE20K recipe, run by tests/test_distill.py in a fresh process, so
that a torchvision stub (where the real torchvision does not import) never
reaches the test process.

    python tests/helpers/convnext_recipe_step.py TMP_DIR
"""
import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from helpers.torchvision_stub import (stub_torchvision,  # noqa: E402
                                      torchvision_imports)


def main() -> None:
    real = torchvision_imports()
    if not real:
        stub_torchvision()
    import mmpretrain.models  # noqa: F401
    from mmengine.registry import init_default_scope
    from test_distill import (KD_ADE_CONVNEXT,
                              assert_recipe_takes_a_real_training_step)
    os.chdir(TESTS.parent)
    init_default_scope('mmseg')
    assert_recipe_takes_a_real_training_step(
        KD_ADE_CONVNEXT, 'mmseg::convnext/', Path(sys.argv[1]))
    print(f'ConvNeXt recipe took a training step (torchvision: '
          f'{"real" if real else "import-only stub"})')


if __name__ == '__main__':
    main()
