// Block-causal patch attention for the world-model rollout, CUDA.
//
//   out[b, h, i] = softmax_j( scale · q[b, h, i] · k[b, h, j] ) · v[b, h, j]
//   over the keys j that are visible to query i:
//     query i is in frame  q_frame_offset + i / frame_len,  key j in frame  j / frame_len,
//     visible iff key frame <= query frame (causal), or always (causal == 0).
//
// Two kernels compute this, both flash-style (online softmax, fp32 accumulation, no
// score matrix in memory), both reading q/k/v through (batch, head, row) strides with a
// contiguous last dimension, so the model's q/k/v views need no copy:
//
//  * patch_attn_fwd_<dt>_<hd>     SIMT kernel, fp32/fp16/bf16, any architecture.
//      128 threads = 32 queries x 4 threads; each thread owns hd/4 dims of its query's
//      q and accumulator in registers. K/V tiles of 32 keys are staged in shared memory
//      as fp32; q·k partial dots are summed across the 4 threads with two xor-shuffles.
//  * patch_attn_fwd_tc_<dt>_<hd>  tensor-core kernel (mma.sync m16n8k16, fp16/bf16,
//      sm_80+). 128 threads = 4 warps x 16 queries; S = Q·K^T and O += P·V are warp-level
//      MMAs whose accumulator layout is the PTX-documented one, so the online-softmax
//      rescale happens in registers (FlashAttention-2 structure, no cp.async pipeline).
//
// Split-KV (flash-decoding): gridDim.z = num_splits chunks of split_len keys each. With
// one split the kernel writes the normalised output; with several, each block writes its
// unnormalised accumulator and (m, l) (running max in log2 units, running sum) to a fp32
// workspace and patch_attn_combine_<dt> merges them. Key tiles past the last key visible
// to a query tile are never loaded (the causal limit clips the key range per tile).
//
// Everything above the host section compiles under NVRTC too (cupy RawModule JIT): no
// standard headers, `extern "C"` entry points. The host launchers are only built by nvcc.
#include "cuda_common.cuh"

namespace simcore_cuda {

// Tile sizes (mirrored in simcore/kernels_cuda.py; a CPU test checks they agree).
#define SIMCORE_ATTN_SIMT_BQ 32
#define SIMCORE_ATTN_SIMT_BK 32
#define SIMCORE_ATTN_TC_BQ 64
#define SIMCORE_ATTN_THREADS 128
// tensor-core key tile: 64 keys for hd <= 64, 32 for hd = 128 (keeps static smem < 48 KiB)
#define SIMCORE_ATTN_TC_BK(HD) ((HD) > 64 ? 32 : 64)

// Exclusive end of the keys visible to a query in frame `qframe`, clipped to k_end.
__device__ __forceinline__ int visible_end(int qframe, int frame_len, int k_end, int causal) {
  if (!causal) return k_end;
  long long lim = ((long long)qframe + 1) * (long long)frame_len;
  return lim < (long long)k_end ? (int)lim : k_end;
}

// ---------------------------------------------------------------------------------
// SIMT kernel
// ---------------------------------------------------------------------------------
template <class E, int HD>
__device__ __forceinline__ void attn_fwd_simt(
    const typename E::T* __restrict__ q, const typename E::T* __restrict__ k,
    const typename E::T* __restrict__ v, typename E::T* __restrict__ out,
    float* __restrict__ ws_acc, float* __restrict__ ws_ml, int H, int Lq, int Lk,
    long long qsb, long long qsh, long long qsl, long long ksb, long long ksh, long long ksl,
    long long vsb, long long vsh, long long vsl, long long osb, long long osh, long long osl,
    int frame_len, int q_frame_offset, int causal, float scale_log2, int num_splits, int split_len) {
  typedef typename E::T T;
  constexpr int BQ = SIMCORE_ATTN_SIMT_BQ, BK = SIMCORE_ATTN_SIMT_BK, NT = SIMCORE_ATTN_THREADS;
  constexpr int TPQ = NT / BQ;   // threads per query (4)
  constexpr int DPT = HD / TPQ;  // dims per thread (8, 16, 32)
  static_assert(DPT % 4 == 0, "float4 reads need 4 | hd/4");
  __shared__ __align__(16) float Ks[BK * HD];  // (key, dim) of the current tile, fp32
  __shared__ __align__(16) float Vs[BK * HD];

  const int tid = threadIdx.x, row = tid / TPQ, sub = tid % TPQ;
  const int bh = blockIdx.y, b = bh / H, h = bh - b * H;
  const int q0 = blockIdx.x * BQ, qi = q0 + row;
  const int q_last = min(q0 + BQ, Lq) - 1;  // last real query of this tile
  const int split = blockIdx.z;
  const int k_begin = split * split_len;
  // keys of this split, clipped to the last key any query of the tile can see
  const int k_end = visible_end(q_frame_offset + q_last / frame_len, frame_len, min(Lk, k_begin + split_len), causal);
  // rows past Lq (padding of the last tile) behave like the last real row; never stored
  const int my_end = visible_end(q_frame_offset + min(qi, q_last) / frame_len, frame_len, k_end, causal);

  float qr[DPT];  // q · scale · log2(e), so softmax uses exp2
  {
    const T* qp = q + b * qsb + h * qsh + (long long)min(qi, q_last) * qsl + sub * DPT;
#pragma unroll
    for (int d = 0; d < DPT; ++d) qr[d] = (qi < Lq) ? E::load(qp + d) * scale_log2 : 0.f;
  }
  float m = neg_inf(), l = 0.f, acc[DPT];
#pragma unroll
  for (int d = 0; d < DPT; ++d) acc[d] = 0.f;

  const T* kb = k + b * ksb + h * ksh;
  const T* vb = v + b * vsb + h * vsh;
  for (int kt = k_begin; kt < k_end; kt += BK) {
    const int nk = min(BK, k_end - kt);
    for (int idx = tid; idx < BK * HD; idx += NT) {  // coalesced along the head dim
      const int j = idx / HD, d = idx - j * HD;
      float kk = 0.f, vv = 0.f;
      if (j < nk) {
        kk = E::load(kb + (long long)(kt + j) * ksl + d);
        vv = E::load(vb + (long long)(kt + j) * vsl + d);
      }
      Ks[idx] = kk;
      Vs[idx] = vv;
    }
    __syncthreads();

    float s[BK];
    float tmax = neg_inf();
#pragma unroll
    for (int j = 0; j < BK; ++j) {
      const float4* kr = reinterpret_cast<const float4*>(Ks + j * HD + sub * DPT);
      float part = 0.f;
#pragma unroll
      for (int d4 = 0; d4 < DPT / 4; ++d4) {
        const float4 kv = kr[d4];
        part += qr[4 * d4] * kv.x + qr[4 * d4 + 1] * kv.y + qr[4 * d4 + 2] * kv.z + qr[4 * d4 + 3] * kv.w;
      }
      // the 4 threads of a query are adjacent lanes: butterfly-sum their partial dots
      part += __shfl_xor_sync(0xffffffffu, part, 1);
      part += __shfl_xor_sync(0xffffffffu, part, 2);
      s[j] = (kt + j < my_end) ? part : neg_inf();
      tmax = fmaxf(tmax, s[j]);
    }
    const float m_new = fmaxf(m, tmax);
    if (m_new != neg_inf()) {  // else: nothing visible yet for this query
      const float alpha = exp2f(m - m_new);  // 0 when m was -inf
      l *= alpha;
#pragma unroll
      for (int d = 0; d < DPT; ++d) acc[d] *= alpha;
#pragma unroll
      for (int j = 0; j < BK; ++j) {
        const float p = exp2f(s[j] - m_new);  // 0 for masked keys
        l += p;
        const float4* vr = reinterpret_cast<const float4*>(Vs + j * HD + sub * DPT);
#pragma unroll
        for (int d4 = 0; d4 < DPT / 4; ++d4) {
          const float4 vv = vr[d4];
          acc[4 * d4] += p * vv.x;
          acc[4 * d4 + 1] += p * vv.y;
          acc[4 * d4 + 2] += p * vv.z;
          acc[4 * d4 + 3] += p * vv.w;
        }
      }
      m = m_new;
    }
    __syncthreads();
  }

  if (qi < Lq) {
    if (num_splits == 1) {
      const float inv = l > 0.f ? 1.f / l : 0.f;
      T* op = out + b * osb + h * osh + (long long)qi * osl + sub * DPT;
#pragma unroll
      for (int d = 0; d < DPT; ++d) E::store(op + d, acc[d] * inv);
    } else {
      const long long r = ((long long)split * gridDim.y + bh) * Lq + qi;
      float* wa = ws_acc + r * HD + sub * DPT;
#pragma unroll
      for (int d = 0; d < DPT; ++d) wa[d] = acc[d];
      if (sub == 0) {
        ws_ml[2 * r] = m;
        ws_ml[2 * r + 1] = l;
      }
    }
  }
}

// ---------------------------------------------------------------------------------
// Tensor-core kernel (sm_80+: mma.sync.m16n8k16 with fp16 or bf16 inputs, fp32 accum)
// ---------------------------------------------------------------------------------
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"), g = lane / 4, t = lane % 4:
//   A 16x16 row-major, 4 x b32: a0 = A[g][2t..2t+1]  a1 = A[g+8][2t..]  a2 = A[g][2t+8..]  a3 = A[g+8][2t+8..]
//   B 16x8 (k x n),     2 x b32: b0 = B[2t..2t+1][g]  b1 = B[2t+8..2t+9][g]
//   C 16x8 fp32,        4 x f32: c0,c1 = C[g][2t, 2t+1]  c2,c3 = C[g+8][2t, 2t+1]
// (in every b32 the lower 16 bits hold the element with the smaller k index).
template <class E>
struct MmaOp;
template <>
struct MmaOp<F16> {
  static __device__ __forceinline__ void run(float* c, const unsigned int* a, const unsigned int* b) {
#if defined(SIMCORE_CPU_EMULATION)  // the CPU harness: the PTX-documented semantics in software
    emu_mma_m16n8k16(c, a, b, /*bf16=*/false);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();  // the host never launches the tensor-core kernel below sm_80
#endif
  }
};
template <>
struct MmaOp<BF16> {
  static __device__ __forceinline__ void run(float* c, const unsigned int* a, const unsigned int* b) {
#if defined(SIMCORE_CPU_EMULATION)  // the CPU harness: the PTX-documented semantics in software
    emu_mma_m16n8k16(c, a, b, /*bf16=*/true);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
  }
};

template <class E>
__device__ __forceinline__ unsigned int pack2(float lo, float hi) {
  unsigned short l16, h16;
  E::store(&l16, lo);
  E::store(&h16, hi);
  return (unsigned int)l16 | ((unsigned int)h16 << 16);
}

template <class E, int HD>
__device__ __forceinline__ void attn_fwd_tc(
    const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
    const unsigned short* __restrict__ v, unsigned short* __restrict__ out,
    float* __restrict__ ws_acc, float* __restrict__ ws_ml, int H, int Lq, int Lk,
    long long qsb, long long qsh, long long qsl, long long ksb, long long ksh, long long ksl,
    long long vsb, long long vsh, long long vsl, long long osb, long long osh, long long osl,
    int frame_len, int q_frame_offset, int causal, float scale_log2, int num_splits, int split_len) {
  constexpr int BQ = SIMCORE_ATTN_TC_BQ, BK = SIMCORE_ATTN_TC_BK(HD), NT = SIMCORE_ATTN_THREADS;
  constexpr int QS = HD + 8;   // smem row strides in 16-bit elements (+8: conflict-free fragment loads)
  constexpr int VS = BK + 8;
  constexpr int NS = BK / 8;   // S n-tiles per warp (keys)
  constexpr int NO = HD / 8;   // O n-tiles per warp (dims)
  constexpr int KQ = HD / 16;  // k-steps of Q·K^T
  constexpr int KP = BK / 16;  // k-steps of P·V
  __shared__ __align__(16) unsigned short Qs[BQ * QS];  // (query, dim)
  __shared__ __align__(16) unsigned short Ks[BK * QS];  // (key, dim)
  __shared__ __align__(16) unsigned short Vt[HD * VS];  // (dim, key): V transposed

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int bh = blockIdx.y, b = bh / H, h = bh - b * H;
  const int q0 = blockIdx.x * BQ;
  const int q_last = min(q0 + BQ, Lq) - 1;
  const int split = blockIdx.z;
  const int k_begin = split * split_len;
  const int k_end = visible_end(q_frame_offset + q_last / frame_len, frame_len, min(Lk, k_begin + split_len), causal);
  // the two query rows this thread holds accumulators for
  const int r0 = q0 + warp * 16 + g, r1 = r0 + 8;
  const int end0 = visible_end(q_frame_offset + min(r0, q_last) / frame_len, frame_len, k_end, causal);
  const int end1 = visible_end(q_frame_offset + min(r1, q_last) / frame_len, frame_len, k_end, causal);

  // 16-byte global loads (8 elements) when the rows allow it: base pointers 16-byte
  // aligned and row strides multiples of 8 elements (true for the model's q/k/v views of
  // its fused qkv buffer and for contiguous tensors); else element by element.
  constexpr int C8 = HD / 8;  // 16-byte chunks per row
  const unsigned short* qb = q + b * qsb + h * qsh;
  const unsigned short* kb = k + b * ksb + h * ksh;
  const unsigned short* vb = v + b * vsb + h * vsh;
  const bool vec = ((((unsigned long long)qb | (unsigned long long)kb | (unsigned long long)vb) & 15ull) == 0) &&
                   (qsl % 8 == 0) && (ksl % 8 == 0) && (vsl % 8 == 0);

  // ---- Q tile -> smem -> A fragments (registers, reused for every key tile)
  if (vec) {
    for (int idx = tid; idx < BQ * C8; idx += NT) {
      const int i = idx / C8, c = idx - i * C8;
      uint4 val = make_uint4(0u, 0u, 0u, 0u);
      if (q0 + i < Lq) val = *reinterpret_cast<const uint4*>(qb + (long long)(q0 + i) * qsl + c * 8);
      *reinterpret_cast<uint4*>(Qs + i * QS + c * 8) = val;  // QS·2 bytes is a multiple of 16
    }
  } else {
    for (int idx = tid; idx < BQ * HD; idx += NT) {
      const int i = idx / HD, d = idx - i * HD;
      Qs[i * QS + d] = (q0 + i < Lq) ? qb[(long long)(q0 + i) * qsl + d] : (unsigned short)0;
    }
  }
  __syncthreads();
  unsigned int qa[KQ][4];
#pragma unroll
  for (int kk = 0; kk < KQ; ++kk) {
    const unsigned short* base = Qs + (warp * 16 + g) * QS + kk * 16 + 2 * t;
    qa[kk][0] = *reinterpret_cast<const unsigned int*>(base);
    qa[kk][1] = *reinterpret_cast<const unsigned int*>(base + 8 * QS);
    qa[kk][2] = *reinterpret_cast<const unsigned int*>(base + 8);
    qa[kk][3] = *reinterpret_cast<const unsigned int*>(base + 8 * QS + 8);
  }

  float o[NO][4];
#pragma unroll
  for (int n = 0; n < NO; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m0 = neg_inf(), m1 = neg_inf(), l0 = 0.f, l1 = 0.f;  // l: this thread's partial row sums

  for (int kt = k_begin; kt < k_end; kt += BK) {
    const int nk = min(BK, k_end - kt);
    __syncthreads();  // previous tile's readers are done with Ks / Vt
    if (vec) {
      for (int idx = tid; idx < BK * C8; idx += NT) {
        const int j = idx / C8, c = idx - j * C8;
        uint4 kk = make_uint4(0u, 0u, 0u, 0u), vv = make_uint4(0u, 0u, 0u, 0u);
        if (j < nk) {
          kk = *reinterpret_cast<const uint4*>(kb + (long long)(kt + j) * ksl + c * 8);
          vv = *reinterpret_cast<const uint4*>(vb + (long long)(kt + j) * vsl + c * 8);
        }
        *reinterpret_cast<uint4*>(Ks + j * QS + c * 8) = kk;
        // V transposed: the 8 dims of this chunk go to 8 rows of Vt (lower half = lower dim)
        const unsigned int w[4] = {vv.x, vv.y, vv.z, vv.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          Vt[(c * 8 + 2 * e) * VS + j] = (unsigned short)(w[e] & 0xffffu);
          Vt[(c * 8 + 2 * e + 1) * VS + j] = (unsigned short)(w[e] >> 16);
        }
      }
    } else {
      for (int idx = tid; idx < BK * HD; idx += NT) {
        const int j = idx / HD, d = idx - j * HD;
        unsigned short kk = 0, vv = 0;
        if (j < nk) {
          kk = kb[(long long)(kt + j) * ksl + d];
          vv = vb[(long long)(kt + j) * vsl + d];
        }
        Ks[j * QS + d] = kk;
        Vt[d * VS + j] = vv;
      }
    }
    __syncthreads();

    // ---- S = Q · K^T for this warp's 16 rows x BK keys
    float s[NS][4];
#pragma unroll
    for (int n = 0; n < NS; ++n) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KQ; ++kk) {
        const unsigned short* base = Ks + (n * 8 + g) * QS + kk * 16 + 2 * t;  // B[k][n] = K[n][k]
        unsigned int bf[2];
        bf[0] = *reinterpret_cast<const unsigned int*>(base);
        bf[1] = *reinterpret_cast<const unsigned int*>(base + 8);
        MmaOp<E>::run(s[n], qa[kk], bf);
      }
    }
    // ---- scale, mask, online softmax (rows g and g+8 of the warp's 16)
    float tmax0 = neg_inf(), tmax1 = neg_inf();
#pragma unroll
    for (int n = 0; n < NS; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = kt + n * 8 + 2 * t + e;
        s[n][e] = key < end0 ? s[n][e] * scale_log2 : neg_inf();
        s[n][2 + e] = key < end1 ? s[n][2 + e] * scale_log2 : neg_inf();
        tmax0 = fmaxf(tmax0, s[n][e]);
        tmax1 = fmaxf(tmax1, s[n][2 + e]);
      }
    }
    // the 4 threads of a group share rows: reduce the max over them
    tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffffu, tmax0, 1));
    tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffffu, tmax0, 2));
    tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffffu, tmax1, 1));
    tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffffu, tmax1, 2));
    const float mn0 = fmaxf(m0, tmax0), mn1 = fmaxf(m1, tmax1);
    // a row with nothing visible so far keeps m = -inf; use 0 as the reference so that
    // exp2(-inf - 0) = 0 instead of NaN
    const float ref0 = mn0 == neg_inf() ? 0.f : mn0, ref1 = mn1 == neg_inf() ? 0.f : mn1;
    const float alpha0 = exp2f(m0 - ref0), alpha1 = exp2f(m1 - ref1);
    m0 = mn0;
    m1 = mn1;
    l0 *= alpha0;
    l1 *= alpha1;
#pragma unroll
    for (int n = 0; n < NO; ++n) {
      o[n][0] *= alpha0;
      o[n][1] *= alpha0;
      o[n][2] *= alpha1;
      o[n][3] *= alpha1;
    }
#pragma unroll
    for (int n = 0; n < NS; ++n) {
      s[n][0] = exp2f(s[n][0] - ref0);
      s[n][1] = exp2f(s[n][1] - ref0);
      s[n][2] = exp2f(s[n][2] - ref1);
      s[n][3] = exp2f(s[n][3] - ref1);
      l0 += s[n][0] + s[n][1];
      l1 += s[n][2] + s[n][3];
    }
    // ---- O += P · V : P's A fragments are the S accumulators of n-tiles 2kk, 2kk+1
#pragma unroll
    for (int kk = 0; kk < KP; ++kk) {
      unsigned int pa[4];
      pa[0] = pack2<E>(s[2 * kk][0], s[2 * kk][1]);
      pa[1] = pack2<E>(s[2 * kk][2], s[2 * kk][3]);
      pa[2] = pack2<E>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[3] = pack2<E>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int n = 0; n < NO; ++n) {
        const unsigned short* base = Vt + (n * 8 + g) * VS + kk * 16 + 2 * t;  // B[k][n] = V[k][n]
        unsigned int bf[2];
        bf[0] = *reinterpret_cast<const unsigned int*>(base);
        bf[1] = *reinterpret_cast<const unsigned int*>(base + 8);
        MmaOp<E>::run(o[n], pa, bf);
      }
    }
  }

  // full row sums
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int qi = half ? r1 : r0;
    if (qi >= Lq) continue;
    const float mm = half ? m1 : m0, ll = half ? l1 : l0;
    if (num_splits == 1) {
      const float inv = ll > 0.f ? 1.f / ll : 0.f;
      unsigned short* op = out + b * osb + h * osh + (long long)qi * osl;
#pragma unroll
      for (int n = 0; n < NO; ++n) {
        E::store(op + n * 8 + 2 * t, o[n][2 * half] * inv);
        E::store(op + n * 8 + 2 * t + 1, o[n][2 * half + 1] * inv);
      }
    } else {
      const long long r = ((long long)split * gridDim.y + bh) * Lq + qi;
      float* wa = ws_acc + r * HD;
#pragma unroll
      for (int n = 0; n < NO; ++n) {
        wa[n * 8 + 2 * t] = o[n][2 * half];
        wa[n * 8 + 2 * t + 1] = o[n][2 * half + 1];
      }
      if (t == 0) {
        ws_ml[2 * r] = mm;
        ws_ml[2 * r + 1] = ll;
      }
    }
  }
}

// ---------------------------------------------------------------------------------
// Split-KV combine: one thread per output element
// ---------------------------------------------------------------------------------
template <class E>
__device__ __forceinline__ void attn_combine(const float* __restrict__ ws_acc, const float* __restrict__ ws_ml,
                                             typename E::T* __restrict__ out, int BH, int H, int Lq, int HD,
                                             int num_splits, long long osb, long long osh, long long osl) {
  const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long total = (long long)BH * Lq * HD;
  if (idx >= total) return;
  const int d = (int)(idx % HD);
  const long long rowi = idx / HD;
  const int qi = (int)(rowi % Lq), bh = (int)(rowi / Lq);
  const int b = bh / H, h = bh - b * H;
  float M = neg_inf();
  for (int s = 0; s < num_splits; ++s) M = fmaxf(M, ws_ml[2 * (((long long)s * BH + bh) * Lq + qi)]);
  float L = 0.f, a = 0.f;
  if (M != neg_inf()) {
    for (int s = 0; s < num_splits; ++s) {
      const long long r = ((long long)s * BH + bh) * Lq + qi;
      const float w = exp2f(ws_ml[2 * r] - M);  // 0 for splits that saw no key
      L += ws_ml[2 * r + 1] * w;
      a += ws_acc[r * HD + d] * w;
    }
  }
  E::store(out + b * osb + h * osh + (long long)qi * osl + d, L > 0.f ? a / L : 0.f);
}

}  // namespace simcore_cuda

// ---------------------------------------------------------------------------------
// extern "C" entry points: one per (kernel, dtype, head dim), found by name from cupy
// ---------------------------------------------------------------------------------
#define SIMCORE_ATTN_PARAMS(T)                                                                          \
  const T *q, const T *k, const T *v, T *out, float *ws_acc, float *ws_ml, int H, int Lq, int Lk,     \
      long long qsb, long long qsh, long long qsl, long long ksb, long long ksh, long long ksl,          \
      long long vsb, long long vsh, long long vsl, long long osb, long long osh, long long osl,          \
      int frame_len, int q_frame_offset, int causal, float scale_log2, int num_splits, int split_len
#define SIMCORE_ATTN_ARGS                                                                                  \
  q, k, v, out, ws_acc, ws_ml, H, Lq, Lk, qsb, qsh, qsl, ksb, ksh, ksl, vsb, vsh, vsl, osb, osh, osl,   \
      frame_len, q_frame_offset, causal, scale_log2, num_splits, split_len

#define SIMCORE_DEF_SIMT(NAME, TAG, HD)                                                       \
  extern "C" __global__ void __launch_bounds__(SIMCORE_ATTN_THREADS)                          \
      patch_attn_fwd_##NAME##_##HD(SIMCORE_ATTN_PARAMS(simcore_cuda::TAG::T)) {              \
    simcore_cuda::attn_fwd_simt<simcore_cuda::TAG, HD>(SIMCORE_ATTN_ARGS);                   \
  }
#define SIMCORE_DEF_TC(NAME, TAG, HD)                                                         \
  extern "C" __global__ void __launch_bounds__(SIMCORE_ATTN_THREADS)                          \
      patch_attn_fwd_tc_##NAME##_##HD(SIMCORE_ATTN_PARAMS(unsigned short)) {                 \
    simcore_cuda::attn_fwd_tc<simcore_cuda::TAG, HD>(SIMCORE_ATTN_ARGS);                     \
  }

SIMCORE_DEF_SIMT(f32, F32, 32)
SIMCORE_DEF_SIMT(f32, F32, 64)
SIMCORE_DEF_SIMT(f32, F32, 128)
SIMCORE_DEF_SIMT(f16, F16, 32)
SIMCORE_DEF_SIMT(f16, F16, 64)
SIMCORE_DEF_SIMT(f16, F16, 128)
SIMCORE_DEF_SIMT(bf16, BF16, 32)
SIMCORE_DEF_SIMT(bf16, BF16, 64)
SIMCORE_DEF_SIMT(bf16, BF16, 128)
SIMCORE_DEF_TC(f16, F16, 32)
SIMCORE_DEF_TC(f16, F16, 64)
SIMCORE_DEF_TC(f16, F16, 128)
SIMCORE_DEF_TC(bf16, BF16, 32)
SIMCORE_DEF_TC(bf16, BF16, 64)
SIMCORE_DEF_TC(bf16, BF16, 128)

#define SIMCORE_DEF_COMBINE(NAME, TAG)                                                                 \
  extern "C" __global__ void patch_attn_combine_##NAME(                                               \
      const float* ws_acc, const float* ws_ml, simcore_cuda::TAG::T* out, int BH, int H, int Lq, int HD, \
      int num_splits, long long osb, long long osh, long long osl) {                                   \
    simcore_cuda::attn_combine<simcore_cuda::TAG>(ws_acc, ws_ml, out, BH, H, Lq, HD, num_splits, osb, osh, osl); \
  }
SIMCORE_DEF_COMBINE(f32, F32)
SIMCORE_DEF_COMBINE(f16, F16)
SIMCORE_DEF_COMBINE(bf16, BF16)

// ---------------------------------------------------------------------------------
// Host launchers (nvcc builds only; the cupy path launches the kernels from Python)
// ---------------------------------------------------------------------------------
#ifndef SIMCORE_CUPY_JIT
#include <cuda_runtime.h>

#include "cuda_launch.h"

namespace simcore_cuda {

typedef void (*AttnKernelF32)(SIMCORE_ATTN_PARAMS(float));
typedef void (*AttnKernelU16)(SIMCORE_ATTN_PARAMS(unsigned short));

static AttnKernelF32 simt_f32(int hd) {
  return hd == 32 ? patch_attn_fwd_f32_32 : hd == 64 ? patch_attn_fwd_f32_64 : hd == 128 ? patch_attn_fwd_f32_128 : nullptr;
}
static AttnKernelU16 simt_u16(int dtype, int hd) {
  if (dtype == kF16)
    return hd == 32 ? patch_attn_fwd_f16_32 : hd == 64 ? patch_attn_fwd_f16_64 : hd == 128 ? patch_attn_fwd_f16_128 : nullptr;
  return hd == 32 ? patch_attn_fwd_bf16_32 : hd == 64 ? patch_attn_fwd_bf16_64 : hd == 128 ? patch_attn_fwd_bf16_128 : nullptr;
}
static AttnKernelU16 tc_u16(int dtype, int hd) {
  if (dtype == kF16)
    return hd == 32 ? patch_attn_fwd_tc_f16_32 : hd == 64 ? patch_attn_fwd_tc_f16_64 : hd == 128 ? patch_attn_fwd_tc_f16_128 : nullptr;
  return hd == 32 ? patch_attn_fwd_tc_bf16_32 : hd == 64 ? patch_attn_fwd_tc_bf16_64 : hd == 128 ? patch_attn_fwd_tc_bf16_128 : nullptr;
}

int launch_patch_attention(const AttnArgs& a, void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const bool tc = a.variant == kAttnTensorCore;
  if (tc && a.dtype == kF32) return (int)cudaErrorInvalidValue;
  if (a.B <= 0 || a.H <= 0 || a.Lq <= 0 || a.Lk <= 0 || a.num_splits <= 0 || a.split_len <= 0 || a.frame_len <= 0)
    return (int)cudaErrorInvalidValue;
  const int bq = tc ? SIMCORE_ATTN_TC_BQ : SIMCORE_ATTN_SIMT_BQ;
  const dim3 grid((unsigned)((a.Lq + bq - 1) / bq), (unsigned)(a.B * a.H), (unsigned)a.num_splits);
  const dim3 block(SIMCORE_ATTN_THREADS);
  const float scale_log2 = a.scale * 1.4426950408889634f;
#define SIMCORE_LAUNCH_ARGS(T)                                                                                   \
  static_cast<const T*>(a.q), static_cast<const T*>(a.k), static_cast<const T*>(a.v), static_cast<T*>(a.out), \
      a.ws_acc, a.ws_ml, a.H, a.Lq, a.Lk, a.q_s[0], a.q_s[1], a.q_s[2], a.k_s[0], a.k_s[1], a.k_s[2], a.v_s[0],  \
      a.v_s[1], a.v_s[2], a.o_s[0], a.o_s[1], a.o_s[2], a.frame_len, a.q_frame_offset, a.causal, scale_log2,    \
      a.num_splits, a.split_len
  if (a.dtype == kF32) {
    AttnKernelF32 kern = simt_f32(a.head_dim);
    if (!kern) return (int)cudaErrorInvalidValue;
    kern<<<grid, block, 0, stream>>>(SIMCORE_LAUNCH_ARGS(float));
  } else {
    AttnKernelU16 kern = tc ? tc_u16(a.dtype, a.head_dim) : simt_u16(a.dtype, a.head_dim);
    if (!kern) return (int)cudaErrorInvalidValue;
    kern<<<grid, block, 0, stream>>>(SIMCORE_LAUNCH_ARGS(unsigned short));
  }
#undef SIMCORE_LAUNCH_ARGS
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || a.num_splits == 1) return (int)err;

  const long long total = (long long)a.B * a.H * a.Lq * a.head_dim;
  const unsigned cblocks = (unsigned)((total + 255) / 256);
  const int BH = a.B * a.H;
  if (a.dtype == kF32)
    patch_attn_combine_f32<<<cblocks, 256, 0, stream>>>(a.ws_acc, a.ws_ml, static_cast<float*>(a.out), BH, a.H, a.Lq,
                                                        a.head_dim, a.num_splits, a.o_s[0], a.o_s[1], a.o_s[2]);
  else if (a.dtype == kF16)
    patch_attn_combine_f16<<<cblocks, 256, 0, stream>>>(a.ws_acc, a.ws_ml, static_cast<unsigned short*>(a.out), BH,
                                                        a.H, a.Lq, a.head_dim, a.num_splits, a.o_s[0], a.o_s[1],
                                                        a.o_s[2]);
  else
    patch_attn_combine_bf16<<<cblocks, 256, 0, stream>>>(a.ws_acc, a.ws_ml, static_cast<unsigned short*>(a.out), BH,
                                                         a.H, a.Lq, a.head_dim, a.num_splits, a.o_s[0], a.o_s[1],
                                                         a.o_s[2]);
  return (int)cudaGetLastError();
}

}  // namespace simcore_cuda
#endif  // SIMCORE_CUPY_JIT
