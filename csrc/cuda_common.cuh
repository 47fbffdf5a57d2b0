// Shared device helpers for simcore's CUDA kernels (attention_cuda.cu, rollout_ops_cuda.cu).
//
// Why no <cuda_fp16.h> / <cuda_bf16.h>: the same sources are JIT-compiled by cupy's
// RawModule through NVRTC, where those headers are not always on the include path. The
// 16-bit types are therefore carried as raw `unsigned short` bit patterns and converted
// with PTX (fp16) or integer arithmetic (bf16, round to nearest even), which compiles
// identically under nvcc and NVRTC and on every architecture from sm_52 up.
//
// Element kinds are tag structs with load/store, so one kernel template serves fp32,
// fp16 and bf16 tensors (all arithmetic is fp32).
#pragma once

namespace simcore_cuda {

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

#ifdef SIMCORE_CPU_EMULATION
// tests/cuda_emu/emu_cuda.h runs these kernels on the CPU (one std::thread per CUDA
// thread) and supplies the fp16 conversions in software
__device__ __forceinline__ float half_bits_to_float(unsigned short h) { return emu_half_to_float(h); }
__device__ __forceinline__ unsigned short float_to_half_bits(float f) { return emu_float_to_half(f); }
#else
__device__ __forceinline__ float half_bits_to_float(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

__device__ __forceinline__ unsigned short float_to_half_bits(float f) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
#endif

__device__ __forceinline__ float bf16_bits_to_float(unsigned short b) {
  return __uint_as_float(((unsigned int)b) << 16);
}

__device__ __forceinline__ unsigned short float_to_bf16_bits(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return (unsigned short)(u >> 16);
}

struct F32 {
  typedef float T;
  static __device__ __forceinline__ float load(const T* p) { return *p; }
  static __device__ __forceinline__ void store(T* p, float v) { *p = v; }
};

struct F16 {
  typedef unsigned short T;
  static __device__ __forceinline__ float load(const T* p) { return half_bits_to_float(*p); }
  static __device__ __forceinline__ void store(T* p, float v) { *p = float_to_half_bits(v); }
};

struct BF16 {
  typedef unsigned short T;
  static __device__ __forceinline__ float load(const T* p) { return bf16_bits_to_float(*p); }
  static __device__ __forceinline__ void store(T* p, float v) { *p = float_to_bf16_bits(v); }
};

}  // namespace simcore_cuda
