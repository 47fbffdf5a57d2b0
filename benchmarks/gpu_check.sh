#!/usr/bin/env bash
# What a session with an H100/H200 runs to check and measure simcore's CUDA path
# (docs/kernels-cuda.md). Usage, from the repository root:
#     bash benchmarks/gpu_check.sh [h100|h200]
# Writes benchmarks/results/gpu_tests.log and benchmarks/results/bench_gpu_<tag>.json.
# Needs no network: it uses the torch/pybind11/cmake already on the machine.
set -uo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-h100}
mkdir -p benchmarks/results
export SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy PYTHONSAFEPATH=1
LOG=benchmarks/results/gpu_tests.log

# The device image lacks gymnasium and pygame: `bash benchmarks/gpu_wheels.sh` here fetches
# them into .whl/ (carry it); they are installed once per machine.
if [ -d .whl ] && ! python -c "import gymnasium, pygame" 2>/dev/null; then
  python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
command -v nvcc && nvcc --version | tail -n 2
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"

# 1. Build simcore._C_cuda for this GPU. Preferred: the package's own build (editable).
#    Fallback (no scikit-build-core here): CMake straight into the source tree.
if ! CUDAARCHS=native python -m pip install --no-build-isolation --no-deps -e . 2>&1 | tail -n 20; then
  echo "pip build failed; building with CMake directly"
  cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=native \
        -DPython_EXECUTABLE="$(command -v python)" \
        -Dpybind11_DIR="$(python -c 'import pybind11; print(pybind11.get_cmake_dir())')" &&
    cmake --build build/gpu -j 8 &&
    cp build/gpu/_C*.so simcore/   # untracked build products: do not commit them
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
python -c "from simcore import kernels; print(kernels.describe())"
# a one-minute smoke check: attention errors vs float64 next to SDPA's, every backend/variant
python -m simcore.kernels_cuda 2>&1 | tee benchmarks/results/gpu_smoke.log

# 2. GPU tests (compiled and cupy backends; cupy ones skip without cupy), then the whole
#    suite, then the whole suite with the reference path forced.
python -m pytest -m gpu -v -p no:cacheprovider tests/test_kernels_cuda.py 2>&1 | tee "$LOG"
python -m pytest -q 2>&1 | tail -n 5 | tee -a "$LOG"
SIMCORE_FORCE_REFERENCE=1 python -m pytest -q 2>&1 | tail -n 5 | tee -a "$LOG"

# If the tensor-core attention tests fail while the SIMT ones pass, the default can be
# switched off while fixing: export SIMCORE_CUDA_ATTN=simt

# 3. Benchmarks, side by side in one process (a few minutes). `simcore bench --out FILE`
#    runs the CPU benchmarks too and merges this under "gpu".
python -m simcore.bench_gpu --out "benchmarks/results/bench_gpu_${TAG}.json"
