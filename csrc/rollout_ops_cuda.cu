// The per-step rollout work between transformer calls, fused (CUDA).
//
// In eager PyTorch each of these is several launches and several full passes over
// memory; each kernel here is one launch and one pass:
//   euler_update_<dt>   x += dt · v, or with classifier-free guidance
//                       x += dt · (vu + g · (v − vu))          (in place, fp32 math)
//   kv_write_<dt>       cache[:, :, slot] = value into a preallocated (B, H, W, N, hd)
//                       ring: the rolling-window KV cache append / eviction, no realloc
//   ada_layernorm_<dt>  y = LayerNorm(x) · (1 + scale) + shift, per frame (adaLN);
//                       one warp per token row, two-pass mean/variance in fp32
//
// Like attention_cuda.cu this compiles under NVRTC for cupy (no standard headers,
// extern "C" entry points); the host launchers are nvcc-only.
#include "cuda_common.cuh"

namespace simcore_cuda {

template <class E>
__device__ __forceinline__ void euler_update(typename E::T* __restrict__ x, const typename E::T* __restrict__ v,
                                             const typename E::T* __restrict__ vu, long long n, float dt,
                                             float guidance, int has_guidance) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    float vel = E::load(v + i);
    if (has_guidance) {
      const float u = E::load(vu + i);
      vel = u + guidance * (vel - u);
    }
    E::store(x + i, E::load(x + i) + dt * vel);
  }
}

template <typename T>
__device__ __forceinline__ void kv_write(T* __restrict__ cache, const T* __restrict__ value, int B, int H, int N,
                                         int hd, int slot, long long csb, long long csh, long long csw,
                                         long long csn, long long vsb, long long vsh, long long vsn) {
  const long long total = (long long)B * H * N * hd;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int d = (int)(i % hd);
    long long r = i / hd;
    const int n = (int)(r % N);
    r /= N;
    const int h = (int)(r % H), b = (int)(r / H);
    cache[b * csb + h * csh + (long long)slot * csw + n * csn + d] = value[b * vsb + h * vsh + n * vsn + d];
  }
}

__device__ __forceinline__ float warp_sum(float s) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

// blockDim.x = 128: 4 warps, one (b, t, n) row of D features each
template <class E>
__device__ __forceinline__ void ada_layernorm(const typename E::T* __restrict__ x, const typename E::T* __restrict__ shift,
                                              const typename E::T* __restrict__ scale, typename E::T* __restrict__ y,
                                              int B, int T, int N, int D, long long shb, long long sht, long long scb,
                                              long long sct, float eps) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long row = (long long)blockIdx.x * (blockDim.x / 32) + warp;
  if (row >= (long long)B * T * N) return;  // whole warp leaves together
  const long long bt = row / N;
  const int t = (int)(bt % T), b = (int)(bt / T);
  const typename E::T* xr = x + row * D;
  float s = 0.f;
  for (int d = lane; d < D; d += 32) s += E::load(xr + d);
  const float mean = warp_sum(s) / (float)D;
  float sq = 0.f;
  for (int d = lane; d < D; d += 32) {
    const float c = E::load(xr + d) - mean;
    sq += c * c;
  }
  const float rstd = rsqrtf(warp_sum(sq) / (float)D + eps);
  const typename E::T* shr = shift + b * shb + t * sht;
  const typename E::T* scr = scale + b * scb + t * sct;
  typename E::T* yr = y + row * D;
  for (int d = lane; d < D; d += 32)
    E::store(yr + d, (E::load(xr + d) - mean) * rstd * (1.f + E::load(scr + d)) + E::load(shr + d));
}

}  // namespace simcore_cuda

#define SIMCORE_DEF_ROLLOUT(NAME, TAG)                                                                         \
  extern "C" __global__ void euler_update_##NAME(simcore_cuda::TAG::T* x, const simcore_cuda::TAG::T* v,      \
                                                 const simcore_cuda::TAG::T* vu, long long n, float dt,       \
                                                 float guidance, int has_guidance) {                          \
    simcore_cuda::euler_update<simcore_cuda::TAG>(x, v, vu, n, dt, guidance, has_guidance);                   \
  }                                                                                                            \
  extern "C" __global__ void kv_write_##NAME(simcore_cuda::TAG::T* cache, const simcore_cuda::TAG::T* value,  \
                                             int B, int H, int N, int hd, int slot, long long csb,            \
                                             long long csh, long long csw, long long csn, long long vsb,      \
                                             long long vsh, long long vsn) {                                  \
    simcore_cuda::kv_write<simcore_cuda::TAG::T>(cache, value, B, H, N, hd, slot, csb, csh, csw, csn, vsb, vsh, \
                                                 vsn);                                                        \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(128) ada_layernorm_##NAME(                                     \
      const simcore_cuda::TAG::T* x, const simcore_cuda::TAG::T* shift, const simcore_cuda::TAG::T* scale,     \
      simcore_cuda::TAG::T* y, int B, int T, int N, int D, long long shb, long long sht, long long scb,        \
      long long sct, float eps) {                                                                              \
    simcore_cuda::ada_layernorm<simcore_cuda::TAG>(x, shift, scale, y, B, T, N, D, shb, sht, scb, sct, eps);   \
  }

SIMCORE_DEF_ROLLOUT(f32, F32)
SIMCORE_DEF_ROLLOUT(f16, F16)
SIMCORE_DEF_ROLLOUT(bf16, BF16)

// ---------------------------------------------------------------------------------
// Host launchers (nvcc builds only)
// ---------------------------------------------------------------------------------
#ifndef SIMCORE_CUPY_JIT
#include <cuda_runtime.h>

#include "cuda_launch.h"

namespace simcore_cuda {

// a grid-stride loop needs no more blocks than keep every SM busy
static unsigned elementwise_blocks(long long n, int threads) {
  long long blocks = (n + threads - 1) / threads;
  if (blocks > 65536) blocks = 65536;
  return (unsigned)(blocks < 1 ? 1 : blocks);
}

int launch_euler_update(int dtype, void* x, const void* v, const void* vu, long long n, float dt, float guidance,
                        int has_guidance, void* stream_ptr) {
  if (n <= 0) return 0;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const unsigned blocks = elementwise_blocks(n, 256);
  typedef unsigned short U;
  if (dtype == kF32)
    euler_update_f32<<<blocks, 256, 0, stream>>>(static_cast<float*>(x), static_cast<const float*>(v),
                                                 static_cast<const float*>(vu), n, dt, guidance, has_guidance);
  else if (dtype == kF16)
    euler_update_f16<<<blocks, 256, 0, stream>>>(static_cast<U*>(x), static_cast<const U*>(v),
                                                 static_cast<const U*>(vu), n, dt, guidance, has_guidance);
  else if (dtype == kBF16)
    euler_update_bf16<<<blocks, 256, 0, stream>>>(static_cast<U*>(x), static_cast<const U*>(v),
                                                  static_cast<const U*>(vu), n, dt, guidance, has_guidance);
  else
    return (int)cudaErrorInvalidValue;
  return (int)cudaGetLastError();
}

int launch_kv_write(int dtype, void* cache, const void* value, int B, int H, int N, int hd, int slot,
                    const long long* cs, const long long* vs, void* stream_ptr) {
  const long long total = (long long)B * H * N * hd;
  if (total <= 0) return 0;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const unsigned blocks = elementwise_blocks(total, 256);
  typedef unsigned short U;
  if (dtype == kF32)
    kv_write_f32<<<blocks, 256, 0, stream>>>(static_cast<float*>(cache), static_cast<const float*>(value), B, H, N,
                                             hd, slot, cs[0], cs[1], cs[2], cs[3], vs[0], vs[1], vs[2]);
  else if (dtype == kF16 || dtype == kBF16)  // a bit copy: same kernel for both 16-bit types
    kv_write_f16<<<blocks, 256, 0, stream>>>(static_cast<U*>(cache), static_cast<const U*>(value), B, H, N, hd,
                                             slot, cs[0], cs[1], cs[2], cs[3], vs[0], vs[1], vs[2]);
  else
    return (int)cudaErrorInvalidValue;
  return (int)cudaGetLastError();
}

int launch_ada_layernorm(int dtype, const void* x, const void* shift, const void* scale, void* y, int B, int T,
                         int N, int D, const long long* shs, const long long* scs, float eps, void* stream_ptr) {
  const long long rows = (long long)B * T * N;
  if (rows <= 0 || D <= 0) return rows <= 0 ? 0 : (int)cudaErrorInvalidValue;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const unsigned blocks = (unsigned)((rows + 3) / 4);
  typedef unsigned short U;
  if (dtype == kF32)
    ada_layernorm_f32<<<blocks, 128, 0, stream>>>(static_cast<const float*>(x), static_cast<const float*>(shift),
                                                  static_cast<const float*>(scale), static_cast<float*>(y), B, T, N,
                                                  D, shs[0], shs[1], scs[0], scs[1], eps);
  else if (dtype == kF16)
    ada_layernorm_f16<<<blocks, 128, 0, stream>>>(static_cast<const U*>(x), static_cast<const U*>(shift),
                                                  static_cast<const U*>(scale), static_cast<U*>(y), B, T, N, D,
                                                  shs[0], shs[1], scs[0], scs[1], eps);
  else if (dtype == kBF16)
    ada_layernorm_bf16<<<blocks, 128, 0, stream>>>(static_cast<const U*>(x), static_cast<const U*>(shift),
                                                   static_cast<const U*>(scale), static_cast<U*>(y), B, T, N, D,
                                                   shs[0], shs[1], scs[0], scs[1], eps);
  else
    return (int)cudaErrorInvalidValue;
  return (int)cudaGetLastError();
}

const char* error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }
int device_count(int* count) { return (int)cudaGetDeviceCount(count); }
int set_device(int device) {
  int cur = -1;
  if (cudaGetDevice(&cur) == cudaSuccess && cur == device) return 0;
  return (int)cudaSetDevice(device);
}
int runtime_version(int* version) { return (int)cudaRuntimeGetVersion(version); }
int driver_version(int* version) { return (int)cudaDriverGetVersion(version); }

}  // namespace simcore_cuda
#endif  // SIMCORE_CUPY_JIT
