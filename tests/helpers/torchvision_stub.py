"""An import-only torchvision, for libraries that import it at module level
but whose code under test never calls it (timm's EfficientFormerV2,
mmpretrain's ConvNeXt). No torchvision wheel on the package registry loads
beside the CPU torch wheel, so the tests that need such a library stand this
in where the real torchvision does not import, and say so."""
import enum
import sys
import types

MODULES = ('torchvision', 'torchvision.datasets', 'torchvision.ops',
           'torchvision.ops.boxes', 'torchvision.ops.misc',
           'torchvision.transforms', 'torchvision.transforms.functional',
           'torchvision.transforms.transforms')


class _Stub(types.ModuleType):
    """Any name it is asked for is a placeholder class (imported, and used
    in isinstance checks, never called)."""

    def __getattr__(self, name: str):
        if name.startswith('__'):
            raise AttributeError(name)
        return type(name, (), {})


def torchvision_imports() -> bool:
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        return False
    return True


def stub_torchvision() -> None:
    for name in MODULES:
        module = _Stub(name)
        module.__path__ = []
        sys.modules[name] = module
        parent, _, child = name.rpartition('.')
        if parent:
            setattr(sys.modules[parent], child, module)
    # Enumerated at import time by timm's and mmpretrain's transforms.
    modes = enum.Enum('InterpolationMode',
                      'NEAREST BILINEAR BICUBIC BOX HAMMING LANCZOS')
    for name in ('torchvision.transforms.functional',
                 'torchvision.transforms.transforms'):
        sys.modules[name].InterpolationMode = modes
