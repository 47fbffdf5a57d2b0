#!/usr/bin/env bash
# Fetch, on a machine with package registries, the wheels simcore needs that the GPU
# device image lacks (it has torch, pluggy, msgpack, typer, tqdm, imageio, pillow,
# safetensors, matplotlib, scikit-build-core, pybind11, but no network). They land in
# .whl/ (git-ignored); the device call names .whl in `carry`, and benchmarks/gpu_check.sh
# installs them first. The device runs Python 3.12 on x86_64.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "gymnasium==1.4.0" "farama-notifications==0.0.4" "pygame==2.6.1"
ls -la .whl
