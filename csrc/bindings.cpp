// simcore._C: the native extension's entry point.
//
// The binding deliberately takes raw data pointers (Python ints from
// tensor.data_ptr()) + shapes + element strides, never a torch::Tensor: there is no
// libtorch link, so one wheel works with any torch build. simcore/kernels.py checks
// dtype, device, shapes and aliasing before it calls in; this layer only refuses
// arguments that would make the C++ read out of bounds (bad ranks, non-positive
// sizes). Every kernel releases the GIL while it runs.
//
// Patch attention exists in up to three SIMD builds (AVX-512, AVX2+FMA, baseline);
// the best one the running CPU supports is chosen at call time, and tests can ask
// for a specific one (isa="...") to check every build on one machine.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels_cpu.h"
#ifdef SIMCORE_OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace {

struct Isa {
  const char* name;
  void (*attention)(const simcore::AttnArgs&);
  int (*query_tile)();
  bool (*supported)();
};

bool cpu_has_avx512() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

bool cpu_has_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool always() { return true; }

// Compiled builds, best first.
const std::vector<Isa>& compiled_isas() {
  static const std::vector<Isa> isas = {
#ifdef SIMCORE_HAVE_AVX512
      {"avx512", simcore::isa_avx512::patch_attention, simcore::isa_avx512::query_tile, cpu_has_avx512},
#endif
#ifdef SIMCORE_HAVE_AVX2
      {"avx2", simcore::isa_avx2::patch_attention, simcore::isa_avx2::query_tile, cpu_has_avx2},
#endif
      {simcore::isa_base::isa_name(), simcore::isa_base::patch_attention, simcore::isa_base::query_tile, always},
  };
  return isas;
}

const Isa& pick_isa(const std::string& want) {
  for (const Isa& isa : compiled_isas()) {
    if (want.empty() ? isa.supported() : want == isa.name) {
      if (!isa.supported()) throw std::invalid_argument("this CPU does not support the " + want + " build");
      return isa;
    }
  }
  std::string known;
  for (const Isa& isa : compiled_isas()) known += std::string(known.empty() ? "" : ", ") + isa.name;
  throw std::invalid_argument("unknown SIMD build '" + want + "'; this extension has: " + known);
}

template <typename T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

void need(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

void copy4(int64_t dst[4], const std::vector<int64_t>& src, const char* name) {
  need(src.size() == 4, std::string(name) + " must have 4 entries");
  for (int i = 0; i < 4; ++i) dst[i] = src[i];
}

void patch_attention(uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, const std::vector<int64_t>& shape,
                     const std::vector<int64_t>& qs, const std::vector<int64_t>& ks, const std::vector<int64_t>& vs,
                     const std::vector<int64_t>& os, int64_t frame_len, int64_t q_frame_offset, bool causal,
                     double scale, int threads, const std::string& isa, uintptr_t k2, uintptr_t v2,
                     const std::vector<int64_t>& k2s, const std::vector<int64_t>& v2s, int64_t lk1) {
  need(shape.size() == 5, "shape must be (B, H, Lq, Lk, hd)");
  for (int64_t s : shape) need(s >= 1, "every size in (B, H, Lq, Lk, hd) must be >= 1");
  need(frame_len >= 1, "frame_len must be >= 1");
  need(q_frame_offset >= 0, "q_frame_offset must be >= 0");
  need(shape[3] < (int64_t{1} << 31), "too many keys for one call (>= 2^31)");
  need(std::isfinite(scale), "scale must be finite");
  simcore::AttnArgs a{};
  a.q = ptr<const float>(q);
  a.k = ptr<const float>(k);
  a.v = ptr<const float>(v);
  a.out = ptr<float>(out);
  a.B = shape[0];
  a.H = shape[1];
  a.Lq = shape[2];
  a.Lk = shape[3];
  a.hd = shape[4];
  copy4(a.qs, qs, "q strides");
  copy4(a.ks, ks, "k strides");
  copy4(a.vs, vs, "v strides");
  copy4(a.os, os, "out strides");
  a.frame_len = frame_len;
  a.q_frame_offset = q_frame_offset;
  a.causal = causal;
  a.scale = static_cast<float>(scale);
  a.threads = threads;
  a.k2 = ptr<const float>(k2);
  a.v2 = ptr<const float>(v2);
  a.Lk1 = shape[3];
  need((k2 == 0) == (v2 == 0), "k2 and v2 go together");
  if (k2 != 0) {
    copy4(a.k2s, k2s, "k2 strides");
    copy4(a.v2s, v2s, "v2 strides");
    need(lk1 >= 0 && lk1 <= shape[3], "lk1 (keys in the first segment) must be in [0, Lk]");
    a.Lk1 = lk1;
  }
  const Isa& chosen = pick_isa(isa);
  py::gil_scoped_release nogil;
  chosen.attention(a);
}

void euler_update(uintptr_t x, uintptr_t v, uintptr_t vu, double dt, double w, int64_t n, int threads) {
  need(n >= 0, "n must be >= 0");
  py::gil_scoped_release nogil;
  simcore::euler_update(ptr<float>(x), ptr<const float>(v), vu ? ptr<const float>(vu) : nullptr,
                        static_cast<float>(dt), static_cast<float>(w), n, threads);
}

void strided_copy4(uintptr_t dst, const std::vector<int64_t>& ds, uintptr_t src, const std::vector<int64_t>& ss,
                   const std::vector<int64_t>& shape, int threads) {
  int64_t d[4], s[4], n[4];
  copy4(d, ds, "dst strides");
  copy4(s, ss, "src strides");
  copy4(n, shape, "shape");
  for (int64_t e : n) need(e >= 0, "sizes must be >= 0");
  py::gil_scoped_release nogil;
  simcore::strided_copy4(ptr<float>(dst), d, ptr<const float>(src), s, n, threads);
}

void ada_layernorm(uintptr_t x, uintptr_t shift, int64_t shift_stride, uintptr_t scale, int64_t scale_stride,
                   uintptr_t y, int64_t G, int64_t R, int64_t D, double eps, int threads) {
  need(G >= 0 && R >= 0 && D >= 1, "need G, R >= 0 and D >= 1");
  need(eps > 0, "eps must be > 0");
  py::gil_scoped_release nogil;
  simcore::ada_layernorm(ptr<const float>(x), ptr<const float>(shift), shift_stride, ptr<const float>(scale),
                         scale_stride, ptr<float>(y), G, R, D, static_cast<float>(eps), threads);
}

py::dict build_info() {
  py::dict d;
#ifdef SIMCORE_OPENMP
  d["openmp"] = true;
  d["max_threads"] = omp_get_max_threads();
#else
  d["openmp"] = false;
  d["max_threads"] = 1;
#endif
  // "simd": the attention build this CPU runs; "simd_builds": every build compiled in
  // (best first) and "simd_usable": those this CPU supports.
  py::list builds, usable;
  for (const Isa& isa : compiled_isas()) {
    builds.append(isa.name);
    if (isa.supported()) usable.append(isa.name);
  }
  d["simd"] = pick_isa("").name;
  d["simd_builds"] = builds;
  d["simd_usable"] = usable;
  d["query_tile"] = pick_isa("").query_tile();
  py::list kernels;
  for (const char* k : {"patch_attention", "euler_update", "kv_write", "ada_layernorm"}) kernels.append(k);
  d["kernels"] = kernels;
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

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "simcore native extension (CPU kernels; raw pointers + shapes + strides, no libtorch link)";
  m.def("build_info", &build_info, "What this build of the extension supports.");
  m.def("patch_attention", &patch_attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
        py::arg("shape"), py::arg("q_strides"), py::arg("k_strides"), py::arg("v_strides"), py::arg("out_strides"),
        py::arg("frame_len"), py::arg("q_frame_offset"), py::arg("causal"), py::arg("scale"),
        py::arg("threads") = 0, py::arg("isa") = "", py::arg("k2") = 0, py::arg("v2") = 0,
        py::arg("k2_strides") = std::vector<int64_t>{}, py::arg("v2_strides") = std::vector<int64_t>{},
        py::arg("lk1") = 0,
        "Block-causal fp32 attention on raw pointers; shape (B, H, Lq, Lk, hd), element strides (b, h, l, d). "
        "With k2/v2, keys [0, lk1) come from k/v and [lk1, Lk) from k2/v2.");
  m.def("euler_update", &euler_update, py::arg("x"), py::arg("v"), py::arg("v_uncond"), py::arg("dt"),
        py::arg("guidance"), py::arg("n"), py::arg("threads") = 0,
        "In place x += dt * (v_u + w (v - v_u)) over n contiguous fp32 values (v_uncond = 0: x += dt v).");
  m.def("strided_copy4", &strided_copy4, py::arg("dst"), py::arg("dst_strides"), py::arg("src"),
        py::arg("src_strides"), py::arg("shape"), py::arg("threads") = 0,
        "dst[a,b,c,d] = src[a,b,c,d] for fp32 4-D views with element strides (the KV-cache slot write).");
  m.def("ada_layernorm", &ada_layernorm, py::arg("x"), py::arg("shift"), py::arg("shift_stride"), py::arg("scale"),
        py::arg("scale_stride"), py::arg("y"), py::arg("G"), py::arg("R"), py::arg("D"), py::arg("eps"),
        py::arg("threads") = 0,
        "y = LayerNorm(x) * (1 + scale) + shift; x, y (G, R, D) contiguous, shift/scale (G, D) rows with the "
        "given row strides (unit stride along D), fp32.");
}
