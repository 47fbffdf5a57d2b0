// A CPU stand-in for the CUDA execution model, just enough to run simcore's kernels
// (csrc/attention_cuda.cu, csrc/rollout_ops_cuda.cu) unmodified on a machine without a
// GPU: one std::thread per CUDA thread, blocks run one after another, __syncthreads is
// a barrier over the block, warp shuffles and mma.sync go through per-warp exchange
// buffers between two warp barriers. mma.sync.m16n8k16 is computed from the fragment
// layouts the PTX ISA documents ("Matrix Fragments for mma.m16n8k16"), so a kernel that
// passes here has its indexing right *as far as that reading of the layouts goes*; the
// real test is tests/test_kernels_cuda.py -m gpu on a GPU.
//
// Included before the kernel sources with SIMCORE_CPU_EMULATION and SIMCORE_CUPY_JIT
// defined (the latter drops the nvcc-only host launchers).
#pragma once

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static  // one copy per kernel instantiation, shared by the block's threads
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return uint4{a, b, c, d}; }

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 gridDim, blockDim;

inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
[[noreturn]] inline void __trap() { std::abort(); }

inline float emu_half_to_float(unsigned short h) {
  _Float16 v;
  std::memcpy(&v, &h, 2);
  return (float)v;
}
inline unsigned short emu_float_to_half(float f) {
  _Float16 v = (_Float16)f;  // round to nearest even, like cvt.rn.f16.f32
  unsigned short h;
  std::memcpy(&h, &v, 2);
  return h;
}

// ---- one block's shared machinery
struct EmuBlock {
  explicit EmuBlock(unsigned threads) : block(threads), warps((threads + 31) / 32) {
    for (auto& w : warps) w = std::make_unique<std::barrier<>>(32);
    xchg.resize(warps.size() * 32);
    mma_a.resize(warps.size() * 32 * 4);
    mma_b.resize(warps.size() * 32 * 2);
  }
  std::barrier<> block;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<float> xchg;
  std::vector<unsigned> mma_a, mma_b;
};
inline EmuBlock* g_block = nullptr;

inline void __syncthreads() { g_block->block.arrive_and_wait(); }
inline void emu_warp_sync() { g_block->warps[threadIdx.x / 32]->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned /*mask: every kernel here shuffles with the full warp*/, float v, int m) {
  const unsigned w = threadIdx.x / 32, lane = threadIdx.x % 32;
  g_block->xchg[w * 32 + lane] = v;
  emu_warp_sync();
  const float r = g_block->xchg[w * 32 + (lane ^ (unsigned)m)];
  emu_warp_sync();
  return r;
}

inline float emu_bits(unsigned short b, bool bf16) {
  return bf16 ? __uint_as_float(((unsigned)b) << 16) : emu_half_to_float(b);
}

// D = A·B + C for one warp; A 16x16 (4 b32 per lane), B 16x8 (2 b32), C/D 16x8 fp32 (4 per lane).
inline void emu_mma_m16n8k16(float* c, const unsigned* a, const unsigned* b, bool bf16) {
  const unsigned w = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int i = 0; i < 4; ++i) g_block->mma_a[(w * 32 + lane) * 4 + i] = a[i];
  for (int i = 0; i < 2; ++i) g_block->mma_b[(w * 32 + lane) * 2 + i] = b[i];
  emu_warp_sync();
  float A[16][16], B[16][8];
  for (int L = 0; L < 32; ++L) {
    const int g = L / 4, t = L % 4;
    const unsigned* ra = &g_block->mma_a[(w * 32 + L) * 4];
    const unsigned* rb = &g_block->mma_b[(w * 32 + L) * 2];
    auto lo = [&](unsigned r) { return emu_bits((unsigned short)(r & 0xffffu), bf16); };
    auto hi = [&](unsigned r) { return emu_bits((unsigned short)(r >> 16), bf16); };
    // A: a0,a1 (row g, cols 2t, 2t+1)  a2,a3 (row g+8)  a4,a5 (row g, cols +8)  a6,a7 (row g+8, cols +8)
    A[g][2 * t] = lo(ra[0]);
    A[g][2 * t + 1] = hi(ra[0]);
    A[g + 8][2 * t] = lo(ra[1]);
    A[g + 8][2 * t + 1] = hi(ra[1]);
    A[g][2 * t + 8] = lo(ra[2]);
    A[g][2 * t + 9] = hi(ra[2]);
    A[g + 8][2 * t + 8] = lo(ra[3]);
    A[g + 8][2 * t + 9] = hi(ra[3]);
    // B: b0,b1 (rows k = 2t, 2t+1, col g)  b2,b3 (rows 2t+8, 2t+9)
    B[2 * t][g] = lo(rb[0]);
    B[2 * t + 1][g] = hi(rb[0]);
    B[2 * t + 8][g] = lo(rb[1]);
    B[2 * t + 9][g] = hi(rb[1]);
  }
  emu_warp_sync();  // buffers free for the next mma
  const int g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {  // c0,c1 (row g, cols 2t, 2t+1)  c2,c3 (row g+8)
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    float acc = c[i];
    for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
    c[i] = acc;
  }
}

// Run body() as every thread of every block of the grid.
template <class F>
void emu_launch(dim3 grid, dim3 block, F&& body) {
  gridDim = grid;
  blockDim = block;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        EmuBlock blk(block.x);
        g_block = &blk;
        std::vector<std::thread> threads;
        threads.reserve(block.x);
        for (unsigned i = 0; i < block.x; ++i)
          threads.emplace_back([&, i] {
            threadIdx = dim3{i, 0, 0};
            blockIdx = dim3{x, y, z};
            body();
          });
        for (auto& t : threads) t.join();
      }
}
