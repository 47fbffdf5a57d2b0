#!/usr/bin/env bash
# Build simcore._C under AddressSanitizer (+ UBSan) in a separate build directory and
# run the kernel parity tests (tests/test_kernels.py) against that build.
#
#   benchmarks/asan_check.sh                 # build dir: /tmp/simcore-asan
#   BUILD=/tmp/x THREADS=2 benchmarks/asan_check.sh
#
# The installed extension is left alone: the ASan module is loaded from the build
# dir and put in sys.modules as simcore._C before the tests import it. Python itself
# is not instrumented, so libasan is LD_PRELOADed; leak detection is off (CPython
# keeps interned objects alive at exit, which LeakSanitizer reports as leaks).
# Exit status: pytest's (an ASan/UBSan report aborts the process, non-zero).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
BUILD=${BUILD:-/tmp/simcore-asan}
THREADS=${THREADS:-2}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="$SAN" -DCMAKE_MODULE_LINKER_FLAGS="$SAN" -DCMAKE_SHARED_LINKER_FLAGS="$SAN" \
  -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v "$PY")" >"$BUILD.cmake.log"
cmake --build "$BUILD" --target _C -j "$THREADS"
SO=$(ls "$BUILD"/_C*.so | head -n1)
echo "ASan build: $SO"

LIBASAN=$(${CXX:-g++} -print-file-name=libasan.so)
LIBUBSAN=$(${CXX:-g++} -print-file-name=libubsan.so)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
LD_PRELOAD="$LIBASAN $LIBUBSAN" OMP_NUM_THREADS="$THREADS" SDL_VIDEODRIVER=dummy PYTHONSAFEPATH=1 "$PY" - "$SO" <<'PYEOF'
import importlib.util
import sys

import simcore

spec = importlib.util.spec_from_file_location("simcore._C", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
sys.modules["simcore._C"] = mod
simcore._C = mod
from simcore import kernels  # noqa: E402

assert kernels.native() is mod, "the tests would not see the ASan build"
print("testing", kernels.describe(), flush=True)
import pytest  # noqa: E402

sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "tests/test_kernels.py"]))
PYEOF
