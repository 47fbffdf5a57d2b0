// simcore._C_cuda: the CUDA kernels' pybind11 entry point.
//
// Takes raw device pointers (tensor.data_ptr() as Python ints), shapes, strides in
// elements and the caller's stream (torch.cuda.current_stream().cuda_stream as an int);
// no libtorch link, so one build works with any torch. Compiled by the host C++
// compiler without CUDA headers (see cuda_launch.h); the module links the CUDA runtime
// statically, so importing it needs no libcudart on the machine, and a machine without
// a driver fails only when a function is called (device_count() raises). Input
// validation (shapes, dtypes, devices) happens in simcore/kernels_cuda.py; this layer
// checks what it must to not read out of bounds of its own arguments.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_launch.h"

namespace py = pybind11;
using namespace simcore_cuda;

#ifndef SIMCORE_CUDA_ARCHS
#define SIMCORE_CUDA_ARCHS "unknown"
#endif

static void check(int code, const char* what) {
  if (code != 0) throw std::runtime_error(std::string("simcore._C_cuda.") + what + ": " + error_string(code));
}

static void* ptr(std::uintptr_t p) { return reinterpret_cast<void*>(p); }

template <size_t N>
static std::array<long long, N> strides(const std::vector<long long>& s, const char* name) {
  if (s.size() != N) throw std::invalid_argument(std::string(name) + " needs " + std::to_string(N) + " strides");
  std::array<long long, N> a{};
  for (size_t i = 0; i < N; ++i) a[i] = s[i];
  return a;
}

static int py_device_count() {
  int n = 0;
  check(simcore_cuda::device_count(&n), "device_count");
  return n;
}

static py::dict build_info() {
  py::dict d;
  d["cuda_archs"] = std::string(SIMCORE_CUDA_ARCHS);
  int v = 0;
  d["runtime_version"] = simcore_cuda::runtime_version(&v) == 0 ? v : -1;  // the static cudart linked in
  v = 0;
  d["driver_version"] = simcore_cuda::driver_version(&v) == 0 ? v : -1;   // 0 when no driver is installed
  d["kernels"] = std::vector<std::string>{"patch_attention", "euler_update", "kv_write", "ada_layernorm"};
  return d;
}

static void patch_attention(int dtype, int variant, int head_dim, std::uintptr_t q, std::uintptr_t k,
                            std::uintptr_t v, std::uintptr_t out, std::uintptr_t ws_acc, std::uintptr_t ws_ml, int B,
                            int H, int Lq, int Lk, const std::vector<long long>& q_s,
                            const std::vector<long long>& k_s, const std::vector<long long>& v_s,
                            const std::vector<long long>& o_s, int frame_len, int q_frame_offset, bool causal,
                            float scale, int num_splits, int split_len, std::uintptr_t stream, int device) {
  check(set_device(device), "set_device");
  AttnArgs a;
  a.dtype = dtype;
  a.variant = variant;
  a.head_dim = head_dim;
  a.q = ptr(q);
  a.k = ptr(k);
  a.v = ptr(v);
  a.out = ptr(out);
  a.ws_acc = static_cast<float*>(ptr(ws_acc));
  a.ws_ml = static_cast<float*>(ptr(ws_ml));
  a.B = B;
  a.H = H;
  a.Lq = Lq;
  a.Lk = Lk;
  auto qs = strides<3>(q_s, "q"), ks = strides<3>(k_s, "k"), vs = strides<3>(v_s, "v"), os = strides<3>(o_s, "out");
  for (int i = 0; i < 3; ++i) {
    a.q_s[i] = qs[i];
    a.k_s[i] = ks[i];
    a.v_s[i] = vs[i];
    a.o_s[i] = os[i];
  }
  a.frame_len = frame_len;
  a.q_frame_offset = q_frame_offset;
  a.causal = causal ? 1 : 0;
  a.scale = scale;
  a.num_splits = num_splits;
  a.split_len = split_len;
  if (num_splits > 1 && (!ws_acc || !ws_ml)) throw std::invalid_argument("split-KV needs the two workspace buffers");
  check(launch_patch_attention(a, ptr(stream)), "patch_attention");
}

static void euler_update(int dtype, std::uintptr_t x, std::uintptr_t v, std::uintptr_t vu, long long n, float dt,
                         float guidance, bool has_guidance, std::uintptr_t stream, int device) {
  check(set_device(device), "set_device");
  if (has_guidance && !vu) throw std::invalid_argument("guidance needs v_uncond");
  check(launch_euler_update(dtype, ptr(x), ptr(v), ptr(vu), n, dt, guidance, has_guidance ? 1 : 0, ptr(stream)),
        "euler_update");
}

static void kv_write(int dtype, std::uintptr_t cache, std::uintptr_t value, int B, int H, int N, int hd, int slot,
                     const std::vector<long long>& cache_s, const std::vector<long long>& value_s,
                     std::uintptr_t stream, int device) {
  check(set_device(device), "set_device");
  auto cs = strides<4>(cache_s, "cache");
  auto vs = strides<3>(value_s, "value");
  check(launch_kv_write(dtype, ptr(cache), ptr(value), B, H, N, hd, slot, cs.data(), vs.data(), ptr(stream)),
        "kv_write");
}

static void ada_layernorm(int dtype, std::uintptr_t x, std::uintptr_t shift, std::uintptr_t scale, std::uintptr_t y,
                          int B, int T, int N, int D, const std::vector<long long>& shift_s,
                          const std::vector<long long>& scale_s, float eps, std::uintptr_t stream, int device) {
  check(set_device(device), "set_device");
  auto shs = strides<2>(shift_s, "shift");
  auto scs = strides<2>(scale_s, "scale");
  check(launch_ada_layernorm(dtype, ptr(x), ptr(shift), ptr(scale), ptr(y), B, T, N, D, shs.data(), scs.data(), eps,
                             ptr(stream)),
        "ada_layernorm");
}

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "simcore CUDA kernels (raw pointers + strides + stream; see simcore/kernels_cuda.py)";
  m.attr("F32") = static_cast<int>(kF32);
  m.attr("F16") = static_cast<int>(kF16);
  m.attr("BF16") = static_cast<int>(kBF16);
  m.attr("ATTN_SIMT") = static_cast<int>(kAttnSimt);
  m.attr("ATTN_TC") = static_cast<int>(kAttnTensorCore);
  m.def("build_info", &build_info, "CUDA architectures compiled, runtime and driver versions.");
  m.def("device_count", &py_device_count, "Number of CUDA devices (raises without a usable driver).");
  m.def("patch_attention", &patch_attention, "Block-causal flash attention with split-KV.", py::arg("dtype"),
        py::arg("variant"), py::arg("head_dim"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
        py::arg("ws_acc"), py::arg("ws_ml"), py::arg("B"), py::arg("H"), py::arg("Lq"), py::arg("Lk"),
        py::arg("q_strides"), py::arg("k_strides"), py::arg("v_strides"), py::arg("out_strides"),
        py::arg("frame_len"), py::arg("q_frame_offset"), py::arg("causal"), py::arg("scale"),
        py::arg("num_splits"), py::arg("split_len"), py::arg("stream"), py::arg("device"));
  m.def("euler_update", &euler_update, "x += dt·v (or the guidance combine), in place.", py::arg("dtype"),
        py::arg("x"), py::arg("v"), py::arg("v_uncond"), py::arg("n"), py::arg("dt"), py::arg("guidance"),
        py::arg("has_guidance"), py::arg("stream"), py::arg("device"));
  m.def("kv_write", &kv_write, "cache[:, :, slot] = value.", py::arg("dtype"), py::arg("cache"), py::arg("value"),
        py::arg("B"), py::arg("H"), py::arg("N"), py::arg("hd"), py::arg("slot"), py::arg("cache_strides"),
        py::arg("value_strides"), py::arg("stream"), py::arg("device"));
  m.def("ada_layernorm", &ada_layernorm, "LayerNorm(x)·(1+scale)+shift.", py::arg("dtype"), py::arg("x"),
        py::arg("shift"), py::arg("scale"), py::arg("y"), py::arg("B"), py::arg("T"), py::arg("N"), py::arg("D"),
        py::arg("shift_strides"), py::arg("scale_strides"), py::arg("eps"), py::arg("stream"), py::arg("device"));
}
