// Latent rollout ops on the CPU, fp32: the per-step work between transformer calls
// that eager PyTorch runs as several memory-bound passes (and temporaries).
//   euler_update   x += dt * (v_u + w * (v_c - v_u))   one pass, in place, no temporaries
//   strided_copy4  a frame's k/v into a ring slot of the KV cache, in place (eviction
//                  is just overwriting the oldest slot: no reallocation, no torch.cat)
//   ada_layernorm  LayerNorm (no affine) + adaLN modulation y = LN(x)*(1+scale)+shift
//                  in one pass over each row (two reads, one write)
// Loops are plain and contiguous so the compiler vectorises them for the baseline ISA;
// these ops are bandwidth-bound, so the wider SIMD builds would not pay here.
#include <cmath>
#include <cstdint>

#include "kernels_cpu.h"
#ifdef SIMCORE_OPENMP
#include <omp.h>
#endif

namespace simcore {
namespace {
// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 16;

inline int team(int threads, int64_t work) {
#ifdef SIMCORE_OPENMP
  if (threads <= 0) threads = omp_get_max_threads();
  return work < kParallelMin ? 1 : threads;
#else
  (void)threads;
  (void)work;
  return 1;
#endif
}
}  // namespace

void euler_update(float* x, const float* v, const float* vu, float dt, float w, int64_t n, int threads) {
  [[maybe_unused]] const int nt = team(threads, n);
  if (vu == nullptr) {
#ifdef SIMCORE_OPENMP
#pragma omp parallel for simd num_threads(nt) if (nt > 1) schedule(static)
#endif
    for (int64_t i = 0; i < n; ++i) x[i] += dt * v[i];
  } else {
#ifdef SIMCORE_OPENMP
#pragma omp parallel for simd num_threads(nt) if (nt > 1) schedule(static)
#endif
    for (int64_t i = 0; i < n; ++i) x[i] += dt * (vu[i] + w * (v[i] - vu[i]));
  }
}

void strided_copy4(float* dst, const int64_t* ds, const float* src, const int64_t* ss, const int64_t* shape,
                   int threads) {
  const int64_t n0 = shape[0], n1 = shape[1], n2 = shape[2], n3 = shape[3];
  [[maybe_unused]] const int nt = team(threads, n0 * n1 * n2 * n3);
  const bool unit = ds[3] == 1 && ss[3] == 1;
#ifdef SIMCORE_OPENMP
#pragma omp parallel for collapse(2) num_threads(nt) if (nt > 1) schedule(static)
#endif
  for (int64_t a = 0; a < n0; ++a)
    for (int64_t b = 0; b < n1; ++b)
      for (int64_t c = 0; c < n2; ++c) {
        float* d = dst + a * ds[0] + b * ds[1] + c * ds[2];
        const float* s = src + a * ss[0] + b * ss[1] + c * ss[2];
        if (unit) {
#pragma omp simd
          for (int64_t e = 0; e < n3; ++e) d[e] = s[e];
        } else {
          for (int64_t e = 0; e < n3; ++e) d[e * ds[3]] = s[e * ss[3]];
        }
      }
}

void ada_layernorm(const float* x, const float* shift, int64_t shift_stride, const float* scale,
                   int64_t scale_stride, float* y, int64_t G, int64_t R, int64_t D, float eps, int threads) {
  [[maybe_unused]] const int nt = team(threads, G * R * D);
#ifdef SIMCORE_OPENMP
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
#endif
  for (int64_t row = 0; row < G * R; ++row) {
    const int64_t g = row / R;
    const float* xr = x + row * D;
    const float* sh = shift + g * shift_stride;
    const float* sc = scale + g * scale_stride;
    float* yr = y + row * D;
    // two-pass mean/variance in fp32 (matches torch's LayerNorm to rounding; a row is
    // at most a few hundred values, so the sum's error stays ~1e-7 relative)
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t e = 0; e < D; ++e) sum += xr[e];
    const float mean = sum / static_cast<float>(D);
    float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (int64_t e = 0; e < D; ++e) {
      const float c = xr[e] - mean;
      sq += c * c;
    }
    const float rstd = 1.0f / std::sqrt(sq / static_cast<float>(D) + eps);
#pragma omp simd
    for (int64_t e = 0; e < D; ++e) yr[e] = (xr[e] - mean) * rstd * (1.0f + sc[e]) + sh[e];
  }
}

}  // namespace simcore
