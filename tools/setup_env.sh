#!/usr/bin/env bash
# Creates (or updates) .venv in the repository with the CPU stack:
# torch 2.13.0 (CPU wheel), mmcv 2.1.0 with its compiled ops (built from the
# sdist once, 10-25 min on 2 cores; pip caches the wheel), mmengine,
# mmsegmentation 1.2.2, mmpretrain, torchvision where one matches the torch
# build, and this package (editable) with its test and deployment (ONNX,
# ONNX Runtime) dependencies and openmim. Idempotent:
# a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" -U pip 'setuptools<81' wheel
"${pip[@]}" torch==2.13.0 numpy
if ! .venv/bin/python -c 'import mmcv.ops' 2>/dev/null; then
    echo 'building mmcv 2.1.0 with ops (first time ~10-25 min; pip caches the wheel)'
    MMCV_WITH_OPS=1 "${pip[@]}" --no-build-isolation mmcv==2.1.0
fi
"${pip[@]}" -e '.[tests,deploy]'
# mmpretrain's models (e.g. the ConvNeXt distillation teacher) import
# torchvision: the one matching torch 2.13.0 where the regular build is
# installed; the registry has none for the CPU wheel.
if .venv/bin/python -c 'import sys, torch; sys.exit("+cpu" in torch.__version__)'; then
    "${pip[@]}" torchvision==0.28.0
else
    echo 'torchvision: none matches the CPU torch wheel; mmpretrain teachers (the ConvNeXt recipe) need a matching pair, e.g. pip install torch==2.14.1 torchvision==0.29.1'
fi
# mim (for `mim train/test cgrseg ...`) without openxlab, which would
# downgrade setuptools; its other dependencies come with .[tests].
"${pip[@]}" --no-deps openmim==0.3.9
# `mim train/test cgrseg ...` look for configs and tools in
# <site-packages>/cgrseg/.mim, which an editable install lacks: link them to
# this checkout (mmseg's develop install links its .mim the same way). The
# folder holds only the links; `import cgrseg` still finds projects/cgrseg.
mim_dir=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/cgrseg/.mim
mkdir -p "$mim_dir"
for name in configs tools model-index.yml; do ln -sfn "$PWD/$name" "$mim_dir/$name"; done
