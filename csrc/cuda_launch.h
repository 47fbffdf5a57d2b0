// Host-side interface between the pybind11 module (cuda_bindings.cpp, plain C++) and the
// launchers in attention_cuda.cu / rollout_ops_cuda.cu (nvcc). No CUDA types here, so
// the binding compiles without the CUDA headers: pointers travel as void*, streams as
// void* (a cudaStream_t, i.e. torch.cuda.current_stream().cuda_stream), errors as the
// int value of a cudaError_t (0 = success; error_string() names it).
#pragma once

namespace simcore_cuda {

enum DType { kF32 = 0, kF16 = 1, kBF16 = 2 };
enum AttnVariant { kAttnSimt = 0, kAttnTensorCore = 1 };

struct AttnArgs {
  int dtype = kF32;
  int variant = kAttnSimt;
  int head_dim = 0;  // 32, 64 or 128
  const void* q = nullptr;  // (B, H, Lq, hd), last dim contiguous
  const void* k = nullptr;  // (B, H, Lk, hd)
  const void* v = nullptr;  // (B, H, Lk, hd)
  void* out = nullptr;      // (B, H, Lq, hd)
  float* ws_acc = nullptr;  // (num_splits, B·H, Lq, hd) fp32, only when num_splits > 1
  float* ws_ml = nullptr;   // (num_splits, B·H, Lq, 2) fp32
  int B = 0, H = 0, Lq = 0, Lk = 0;
  long long q_s[3] = {0, 0, 0}, k_s[3] = {0, 0, 0}, v_s[3] = {0, 0, 0}, o_s[3] = {0, 0, 0};  // (b, h, row) strides, elements
  int frame_len = 1, q_frame_offset = 0, causal = 1;
  float scale = 1.f;
  int num_splits = 1, split_len = 1;
};

int launch_patch_attention(const AttnArgs& a, void* stream);

// x += dt · v   or, with guidance,   x += dt · (vu + g · (v − vu)); n elements, contiguous
int launch_euler_update(int dtype, void* x, const void* v, const void* vu, long long n, float dt, float guidance,
                        int has_guidance, void* stream);

// cache[b, h, slot, n, :] = value[b, h, n, :]  (strides in elements; last dim contiguous)
int launch_kv_write(int dtype, void* cache, const void* value, int B, int H, int N, int hd, int slot,
                    const long long* cache_s /*b,h,w,n*/, const long long* value_s /*b,h,n*/, void* stream);

// y = LayerNorm(x) · (1 + scale) + shift; x, y contiguous (B, T, N, D); shift/scale (B, T, D)
// with (b, t) strides and a contiguous last dim
int launch_ada_layernorm(int dtype, const void* x, const void* shift, const void* scale, void* y, int B, int T,
                         int N, int D, const long long* shift_s /*b,t*/, const long long* scale_s /*b,t*/, float eps,
                         void* stream);

const char* error_string(int code);
// makes `device` current for this thread in the (statically linked) runtime the launchers
// use; torch's current device lives in torch's own runtime instance
int set_device(int device);
int device_count(int* count);  // returns a cudaError_t value
int runtime_version(int* version);
int driver_version(int* version);

}  // namespace simcore_cuda
