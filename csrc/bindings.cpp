// simcore._C: the native extension's entry point.
//
// The kernels (patch attention, latent rollout ops) are added here as they land;
// the binding deliberately takes raw pointers + shapes + strides (no libtorch link)
// so one wheel works with any torch build. build_info() lets simcore.kernels and
// `simcore plugins` report what this build can do.
#include <pybind11/pybind11.h>
#include <string>
#ifdef SIMCORE_OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

static py::dict build_info() {
  py::dict d;
#ifdef SIMCORE_OPENMP
  d["openmp"] = true;
  d["max_threads"] = omp_get_max_threads();
#else
  d["openmp"] = false;
  d["max_threads"] = 1;
#endif
#if defined(__AVX512F__)
  d["simd"] = "avx512";
#elif defined(__AVX2__)
  d["simd"] = "avx2";
#elif defined(__SSE2__)
  d["simd"] = "sse2";
#elif defined(__ARM_NEON)
  d["simd"] = "neon";
#else
  d["simd"] = "scalar";
#endif
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  d["compiler"] = std::string("msvc ") + std::to_string(_MSC_VER);
#else
  d["compiler"] = "unknown";
#endif
  d["cuda"] = false;
  return d;
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "simcore native extension (CPU)";
  m.def("build_info", &build_info, "What this build of the extension supports.");
}
