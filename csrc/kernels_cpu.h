// Plain-C++ interface of the CPU kernels (no pybind11, no libtorch), shared by the
// ISA-specific builds of attention_cpu.cpp, rollout_ops_cpu.cpp and bindings.cpp.
//
// attention_cpu.cpp is compiled once per SIMD target (AVX-512, AVX2+FMA, baseline)
// into its own namespace; bindings.cpp picks one at run time with
// __builtin_cpu_supports, so the shipped build needs no -march=native.
#pragma once
#include <cstdint>

namespace simcore {

// One attention call. Tensors are fp32 with shape (B, H, L, hd) and arbitrary element
// strides (sb, sh, sl, sd). Key j belongs to frame j / frame_len, query i to frame
// q_frame_offset + i / frame_len; with causal, a key is visible iff its frame <= the
// query's frame (block-causal); without, every key is visible.
struct AttnArgs {
  const float* q;
  const float* k;
  const float* v;
  float* out;
  int64_t B, H, Lq, Lk, hd;
  int64_t qs[4], ks[4], vs[4], os[4];
  int64_t frame_len, q_frame_offset;
  bool causal;
  float scale;
  int threads;  // OpenMP threads for this call (<= 0: the OpenMP default)
  // Optional second key/value segment (k2/v2 non-null): keys [0, Lk1) come from k/v and
  // keys [Lk1, Lk) from k2/v2, so a rollout step reads the KV cache in place next to the
  // new frame's keys instead of concatenating them into a fresh tensor every call.
  const float* k2;
  const float* v2;
  int64_t k2s[4], v2s[4];
  int64_t Lk1;
};

#define SIMCORE_DECLARE_ISA(ns)                          \
  namespace ns {                                         \
  void patch_attention(const AttnArgs& a);               \
  const char* isa_name();                                \
  int query_tile();                                      \
  }

SIMCORE_DECLARE_ISA(isa_avx512)
SIMCORE_DECLARE_ISA(isa_avx2)
SIMCORE_DECLARE_ISA(isa_base)
#undef SIMCORE_DECLARE_ISA

// Rollout ops (rollout_ops_cpu.cpp); contiguous fp32 unless noted.
// x[i] += dt * (vu[i] + w * (v[i] - vu[i]))  (vu == nullptr: x[i] += dt * v[i])
void euler_update(float* x, const float* v, const float* vu, float dt, float w, int64_t n, int threads);
// Strided 4-D copy dst[b,h,n,d] = src[b,h,n,d] (a KV-cache ring slot write).
void strided_copy4(float* dst, const int64_t* dstride, const float* src, const int64_t* sstride,
                   const int64_t* shape, int threads);
// y = LayerNorm(x) * (1 + scale) + shift over rows of D; x (G, R, D) contiguous, y likewise,
// shift/scale (G, D) with row strides shift_stride/scale_stride (unit stride along D):
// every row of group g uses row g of shift/scale (e.g. chunks of one adaLN projection).
void ada_layernorm(const float* x, const float* shift, int64_t shift_stride, const float* scale,
                   int64_t scale_stride, float* y, int64_t G, int64_t R, int64_t D, float eps, int threads);

}  // namespace simcore
