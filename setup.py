"""Build hook: a regular (non-editable) install ships ``configs/``, ``tools/``
and ``model-index.yml`` inside the package as ``cgrseg/.mim/``, which is where
``mim train/test cgrseg ...`` look for them. Metadata is in setup.cfg."""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

MIM_FILES = ('configs', 'tools', 'model-index.yml')


class BuildPyWithMim(build_py):

    def run(self) -> None:
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        here = os.path.dirname(os.path.abspath(__file__))
        target = os.path.join(self.build_lib, 'cgrseg', '.mim')
        os.makedirs(target, exist_ok=True)
        for name in MIM_FILES:
            source = os.path.join(here, name)
            dest = os.path.join(target, name)
            if os.path.isdir(source):
                shutil.copytree(
                    source, dest, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns('__pycache__'))
            elif os.path.isfile(source):
                shutil.copy2(source, dest)


setup(cmdclass={'build_py': BuildPyWithMim})
