// Patch attention on the CPU, fp32: fused online softmax over key tiles, block-causal
// across frames, full within a frame; no Lq x Lk score matrix is ever materialised.
//
// This file is compiled once per SIMD target (CMake defines SIMCORE_ISA_AVX512,
// SIMCORE_ISA_AVX2 or neither, and passes the matching -m flags) into its own
// namespace; bindings.cpp chooses one at run time. Everything here is written with
// GCC/Clang vector extensions, so the same source becomes AVX-512, AVX2 or SSE2/NEON
// code, and internal linkage keeps the three builds' helpers from being merged.
//
// Layout ("queries in lanes"). A task owns one (batch, head, query tile of QT = QV*VL
// queries). The tile's queries are packed once, transposed and pre-scaled:
// Qt[d][i] = q[i][d] * scale * log2(e). Then, per tile of NK keys:
//   S[j][i]  = sum_d Qt[d][i] * k[j][d]   register block: KB keys x QV vectors of queries,
//                                         k[j][d] broadcast straight from the caller's
//                                         tensor (no K packing, any row stride)
//   mask     S[j][i] = -inf where key j's frame is after query i's (only on the tiles
//            that straddle a frame boundary of some query in the tile)
//   softmax  running max m[i] and sum l[i] are vectors over queries, so every
//            reduction is vertical (no horizontal shuffles); p = 2^(S - m)
//   O        Ot[d][i] = Ot[d][i] * alpha[i] + sum_j p[j][i] * v[j][d]   register block:
//            DB dims x QV vectors, v[j][d] broadcast from the caller's tensor
// and finally out[i][d] = Ot[d][i] / l[i]. Head dims 32/64/128 (with unit stride along
// hd) are compile-time specialisations; any other head dim or stride takes the
// generic instantiation. Keys may come in two segments (the KV cache, then the new
// frame's keys) so the rollout never concatenates the cache.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels_cpu.h"
#ifdef SIMCORE_OPENMP
#include <omp.h>
#endif

#if defined(SIMCORE_ISA_AVX512)
#define SIMCORE_NS isa_avx512
#define SIMCORE_NAME "avx512"
#define SIMCORE_VL 16
#define SIMCORE_QV_MAX 4
#define SIMCORE_KB 6
#define SIMCORE_DB 6
#elif defined(SIMCORE_ISA_AVX2)
#define SIMCORE_NS isa_avx2
#define SIMCORE_NAME "avx2"
#define SIMCORE_VL 8
#define SIMCORE_QV_MAX 2
#define SIMCORE_KB 5
#define SIMCORE_DB 5
#else
#define SIMCORE_NS isa_base
#if defined(__SSE2__)
#define SIMCORE_NAME "sse2"
#elif defined(__ARM_NEON)
#define SIMCORE_NAME "neon"
#else
#define SIMCORE_NAME "generic"
#endif
#define SIMCORE_VL 4
#define SIMCORE_QV_MAX 2
#define SIMCORE_KB 5
#define SIMCORE_DB 5
#endif

namespace simcore {
namespace SIMCORE_NS {
namespace {

constexpr int VL = SIMCORE_VL;       // fp32 lanes per vector
constexpr int QV_MAX = SIMCORE_QV_MAX;
constexpr int KB = SIMCORE_KB;       // keys per S micro-block (KB*QV accumulators)
constexpr int DB = SIMCORE_DB;       // head dims per O micro-block (DB*QV accumulators)
constexpr int NK = 64;               // keys per softmax tile
constexpr float LOG2E = 1.4426950408889634f;

typedef float vf __attribute__((vector_size(VL * 4)));
typedef int32_t vi __attribute__((vector_size(VL * 4)));

// Aligned loads/stores: only ever used on this file's own 64-byte-aligned scratch.
inline vf ld(const float* p) { return *reinterpret_cast<const vf*>(p); }
inline void st(float* p, vf x) { *reinterpret_cast<vf*>(p) = x; }
inline vi ldi(const int32_t* p) { return *reinterpret_cast<const vi*>(p); }
inline vf bc(float s) { return vf{} + s; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// 2^x for x <= 0 (scores minus the running max). Range reduction x = n + f,
// |f| <= 1/2, and a degree-7 Taylor polynomial of 2^f (relative error < 1e-8 before
// rounding); 2^n is built in the exponent bits. Below -125 (and -inf, the mask) the
// result is flushed to 0, which also keeps every product normal.
inline vf exp2v(vf x) {
  const vi under = x < bc(-125.0f);
  x = vmax(x, bc(-125.0f));
  const vf r = (x + bc(12582912.0f)) - bc(12582912.0f);  // round to nearest (1.5 * 2^23 trick)
  const vf f = x - r;
  vf p = bc(1.525273380405984e-05f);
  p = p * f + bc(1.5403530393381606e-04f);
  p = p * f + bc(1.3333558146428443e-03f);
  p = p * f + bc(9.618129107628477e-03f);
  p = p * f + bc(5.550410866482158e-02f);
  p = p * f + bc(2.402265069591007e-01f);
  p = p * f + bc(6.931471805599453e-01f);
  p = p * f + bc(1.0f);
  const vi n = __builtin_convertvector(r, vi);
  const vi bits = (n + 127) << 23;
  const vf res = p * (vf)bits;
  return under ? bc(0.0f) : res;
}

// S[jb + jj][:] for KB keys (rows clamped to the tile's last key; callers mask or
// ignore the extra rows) against the packed query tile.
template <int QV, int HD>
inline void score_block(const float* __restrict Qt, const float* const* kr, int64_t hd, int64_t ksd,
                        float* __restrict S) {
  constexpr int QT = QV * VL;
  vf acc[KB][QV];
#pragma GCC unroll 8
  for (int jj = 0; jj < KB; ++jj)
#pragma GCC unroll 4
    for (int u = 0; u < QV; ++u) acc[jj][u] = vf{};
  const int64_t n = HD ? HD : hd;
  const int64_t sd = HD ? 1 : ksd;
  for (int64_t d = 0; d < n; ++d) {
    vf qv[QV];
#pragma GCC unroll 4
    for (int u = 0; u < QV; ++u) qv[u] = ld(Qt + d * QT + u * VL);
#pragma GCC unroll 8
    for (int jj = 0; jj < KB; ++jj) {
      const vf kk = bc(kr[jj][d * sd]);
#pragma GCC unroll 4
      for (int u = 0; u < QV; ++u) acc[jj][u] += qv[u] * kk;
    }
  }
#pragma GCC unroll 8
  for (int jj = 0; jj < KB; ++jj)
#pragma GCC unroll 4
    for (int u = 0; u < QV; ++u) st(S + jj * QT + u * VL, acc[jj][u]);
}

// Ot[d0 .. d0+ND) = Ot * alpha + P^T V over the tile's kn keys.
template <int QV, int ND>
inline void value_block(float* __restrict Ot, const float* __restrict S, const float* v0, int64_t vsl,
                        int64_t vsd, int64_t kn, const vf* alpha) {
  constexpr int QT = QV * VL;
  vf acc[ND][QV];
#pragma GCC unroll 8
  for (int dd = 0; dd < ND; ++dd)
#pragma GCC unroll 4
    for (int u = 0; u < QV; ++u) acc[dd][u] = ld(Ot + dd * QT + u * VL) * alpha[u];
  for (int64_t j = 0; j < kn; ++j) {
    const float* vr = v0 + j * vsl;
    vf p[QV];
#pragma GCC unroll 4
    for (int u = 0; u < QV; ++u) p[u] = ld(S + j * QT + u * VL);
#pragma GCC unroll 8
    for (int dd = 0; dd < ND; ++dd) {
      const vf vv = bc(vr[dd * vsd]);
#pragma GCC unroll 4
      for (int u = 0; u < QV; ++u) acc[dd][u] += p[u] * vv;
    }
  }
#pragma GCC unroll 8
  for (int dd = 0; dd < ND; ++dd)
#pragma GCC unroll 4
    for (int u = 0; u < QV; ++u) st(Ot + dd * QT + u * VL, acc[dd][u]);
}

template <int QV>
inline void value_rem(int rem, float* Ot, const float* S, const float* v0, int64_t vsl, int64_t vsd, int64_t kn,
                      const vf* alpha) {
  switch (rem) {  // DB <= 6: at most 5 leftover dims
    case 1: value_block<QV, 1>(Ot, S, v0, vsl, vsd, kn, alpha); break;
    case 2: value_block<QV, 2>(Ot, S, v0, vsl, vsd, kn, alpha); break;
    case 3: value_block<QV, 3>(Ot, S, v0, vsl, vsd, kn, alpha); break;
    case 4: value_block<QV, 4>(Ot, S, v0, vsl, vsd, kn, alpha); break;
    case 5: value_block<QV, 5>(Ot, S, v0, vsl, vsd, kn, alpha); break;
    default: break;
  }
}

inline size_t scratch_floats(int qt, int64_t hd) { return static_cast<size_t>(2 * hd + NK + KB) * qt; }

// One (b, h, query tile) task.
template <int QV, int HD>
void attend_tile(const AttnArgs& a, int64_t b, int64_t h, int64_t q0, float* scratch, int32_t* lim) {
  constexpr int QT = QV * VL;
  const int64_t hd = HD ? HD : a.hd;
  const int64_t qn = imin(QT, a.Lq - q0);
  const float* qp = a.q + b * a.qs[0] + h * a.qs[1];
  float* op = a.out + b * a.os[0] + h * a.os[1];
  // key segments: [0, Lk1) from k/v, [Lk1, Lk) from k2/v2 (when given)
  struct Seg {
    const float* k;
    const float* v;
    int64_t ksl, ksd, vsl, vsd, begin, end;
  } segs[2];
  const int64_t lk1 = a.k2 ? a.Lk1 : a.Lk;
  segs[0] = {a.k + b * a.ks[0] + h * a.ks[1], a.v + b * a.vs[0] + h * a.vs[1], a.ks[2], HD ? 1 : a.ks[3], a.vs[2],
             HD ? 1 : a.vs[3], 0, lk1};
  int nseg = 1;
  if (a.k2 && lk1 < a.Lk) {
    segs[1] = {a.k2 + b * a.k2s[0] + h * a.k2s[1], a.v2 + b * a.v2s[0] + h * a.v2s[1], a.k2s[2],
               HD ? 1 : a.k2s[3], a.v2s[2], HD ? 1 : a.v2s[3], lk1, a.Lk};
    nseg = 2;
  }
  float* Qt = scratch;     // (hd, QT)
  float* Ot = Qt + hd * QT;  // (hd, QT)
  float* S = Ot + hd * QT;   // (NK + KB, QT)

  // Pack the query tile transposed, in the exp2 domain; padding lanes are zero.
  const float c = a.scale * LOG2E;
  for (int64_t i = 0; i < QT; ++i) {
    if (i < qn) {
      const float* qr = qp + (q0 + i) * a.qs[2];
      for (int64_t d = 0; d < hd; ++d) Qt[d * QT + i] = qr[d * a.qs[3]] * c;
    } else {
      for (int64_t d = 0; d < hd; ++d) Qt[d * QT + i] = 0.0f;
    }
  }
  // Visible keys per query lane: [0, lim). kfull: visible to every query of the tile.
  int64_t kmax = 0, kfull = a.Lk;
  for (int64_t i = 0; i < QT; ++i) {
    const int64_t qi = q0 + imin(i, qn - 1);
    int64_t L = a.Lk;
    if (a.causal) L = imin(a.Lk, (a.q_frame_offset + qi / a.frame_len + 1) * a.frame_len);
    lim[i] = static_cast<int32_t>(L);
    if (i < qn) {
      kmax = imax(kmax, L);
      kfull = imin(kfull, L);
    }
  }
  std::memset(Ot, 0, sizeof(float) * hd * QT);
  vf m[QV], l[QV];
  for (int u = 0; u < QV; ++u) {
    m[u] = bc(-__builtin_inff());
    l[u] = vf{};
  }

  for (int si = 0; si < nseg; ++si)
  for (int64_t kt0 = segs[si].begin; kt0 < imin(kmax, segs[si].end); kt0 += NK) {
    const Seg& sg = segs[si];
    const int64_t kn = imin(NK, imin(kmax, sg.end) - kt0);  // tiles never straddle a segment boundary
    const float* kp = sg.k + (kt0 - sg.begin) * sg.ksl;       // this tile's first key
    // scores
    for (int64_t jb = 0; jb < kn; jb += KB) {
      const float* kr[KB];
      for (int jj = 0; jj < KB; ++jj) kr[jj] = kp + imin(jb + jj, kn - 1) * sg.ksl;
      score_block<QV, HD>(Qt, kr, hd, HD ? 1 : sg.ksd, S + jb * QT);
    }
    // block-causal mask on the tiles that cross some query's last visible frame
    if (kt0 + kn > kfull) {
      for (int64_t j = 0; j < kn; ++j) {
        const vi jv = vi{} + static_cast<int32_t>(kt0 + j);
        for (int u = 0; u < QV; ++u) {
          const vf s = ld(S + j * QT + u * VL);
          st(S + j * QT + u * VL, jv < ldi(lim + u * VL) ? s : bc(-__builtin_inff()));
        }
      }
    }
    // online softmax (vertical: one running max/sum per query lane)
    vf mt[QV], alpha[QV], ls[QV];
    for (int u = 0; u < QV; ++u) mt[u] = m[u];
    for (int64_t j = 0; j < kn; ++j)
#pragma GCC unroll 4
      for (int u = 0; u < QV; ++u) mt[u] = vmax(mt[u], ld(S + j * QT + u * VL));
    for (int u = 0; u < QV; ++u) {
      alpha[u] = exp2v(m[u] - mt[u]);  // first tile: exp2(-inf) = 0
      ls[u] = vf{};
    }
    for (int64_t j = 0; j < kn; ++j)
#pragma GCC unroll 4
      for (int u = 0; u < QV; ++u) {
        const vf p = exp2v(ld(S + j * QT + u * VL) - mt[u]);
        st(S + j * QT + u * VL, p);
        ls[u] += p;
      }
    for (int u = 0; u < QV; ++u) {
      l[u] = l[u] * alpha[u] + ls[u];
      m[u] = mt[u];
    }
    // O += P^T V
    const float* v0 = sg.v + (kt0 - sg.begin) * sg.vsl;
    const int64_t vsd = HD ? 1 : sg.vsd;  // a compile-time 1 for the specialised head dims
    int64_t d0 = 0;
    for (; d0 + DB <= hd; d0 += DB) value_block<QV, DB>(Ot + d0 * QT, S, v0 + d0 * vsd, sg.vsl, vsd, kn, alpha);
    if (d0 < hd) value_rem<QV>(static_cast<int>(hd - d0), Ot + d0 * QT, S, v0 + d0 * vsd, sg.vsl, vsd, kn, alpha);
  }

  // out = O / l, transposed back into the caller's layout
  alignas(64) float inv[QT];
  for (int u = 0; u < QV; ++u) st(inv + u * VL, bc(1.0f) / l[u]);
  for (int64_t i = 0; i < qn; ++i) {
    float* orow = op + (q0 + i) * a.os[2];
    const float s = inv[i];
    for (int64_t d = 0; d < hd; ++d) orow[d * a.os[3]] = Ot[d * QT + i] * s;
  }
}

template <int QV, int HD>
void run(const AttnArgs& a, int threads) {
  constexpr int QT = QV * VL;
  const int64_t tiles = (a.Lq + QT - 1) / QT;
  const int64_t total = a.B * a.H * tiles;
  const size_t bytes = (scratch_floats(QT, HD ? HD : a.hd) * sizeof(float) + 63) / 64 * 64;
#ifdef SIMCORE_OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1 && total > 1)
#endif
  {
    float* scratch = static_cast<float*>(std::aligned_alloc(64, bytes));
    alignas(64) int32_t lim[QT];
    if (scratch != nullptr) {
#ifdef SIMCORE_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
      for (int64_t t = 0; t < total; ++t) {
        const int64_t tile = t % tiles, bh = t / tiles;
        attend_tile<QV, HD>(a, bh / a.H, bh % a.H, tile * QT, scratch, lim);
      }
      std::free(scratch);
    }
  }
}

template <int QV>
void run_hd(const AttnArgs& a, int threads) {
  const bool unit = a.ks[3] == 1 && a.vs[3] == 1 && (!a.k2 || (a.k2s[3] == 1 && a.v2s[3] == 1));
  if (unit && a.hd == 32) return run<QV, 32>(a, threads);
  if (unit && a.hd == 64) return run<QV, 64>(a, threads);
  if (unit && a.hd == 128) return run<QV, 128>(a, threads);
  return run<QV, 0>(a, threads);
}

}  // namespace

const char* isa_name() { return SIMCORE_NAME; }
int query_tile() { return QV_MAX * VL; }

void patch_attention(const AttnArgs& a) {
  if (a.B <= 0 || a.H <= 0 || a.Lq <= 0) return;
  int threads = a.threads;
#ifdef SIMCORE_OPENMP
  if (threads <= 0) threads = omp_get_max_threads();
#else
  threads = 1;
#endif
  // Tiny calls are not worth waking the thread team (~5 us against ~0.1 us of work).
  const double flops = 4.0 * a.B * a.H * a.Lq * a.Lk * a.hd;
  if (flops < 2.0e6) threads = 1;
  // Widest query tile that the queries fill, narrowed while there are too few tasks
  // to keep every thread busy.
  int qv = QV_MAX;
  while (qv > 1 && (qv / 2) * VL >= a.Lq) qv /= 2;
  while (qv > 1 && a.B * a.H * ((a.Lq + qv * VL - 1) / (qv * VL)) < 2 * threads) qv /= 2;
  if (qv >= 4 && QV_MAX >= 4) return run_hd<(QV_MAX >= 4 ? 4 : 1)>(a, threads);
  if (qv >= 2) return run_hd<2>(a, threads);
  return run_hd<1>(a, threads);
}

}  // namespace SIMCORE_NS
}  // namespace simcore
