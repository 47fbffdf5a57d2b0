// Builds simcore's CUDA kernel sources for the CPU (see emu_cuda.h) and exposes one C
// entry point shaped like cuLaunchKernel: a kernel name, grid, block, and an array of
// pointers to the argument values. tests/test_kernels_cuda.py loads it with ctypes and
// drives it through the same Python launch code as the cupy backend.
//
//   g++ -std=c++20 -O1 -shared -fPIC -pthread -I csrc tests/cuda_emu/emu_harness.cpp -o emu.so
#define SIMCORE_CPU_EMULATION 1
#define SIMCORE_CUPY_JIT 1  // device code only: the host launchers need nvcc
#include "emu_cuda.h"

#include "attention_cuda.cu"
#include "rollout_ops_cuda.cu"

#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>

namespace {

template <class... A, std::size_t... I>
void call_with(void (*f)(A...), void** args, std::index_sequence<I...>) {
  f(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}

template <class... A>
std::function<void(void**)> caller(void (*f)(A...)) {
  return [f](void** args) { call_with(f, args, std::index_sequence_for<A...>{}); };
}

const std::unordered_map<std::string, std::function<void(void**)>>& table() {
  static const std::unordered_map<std::string, std::function<void(void**)>> t = {
#define K(name) {#name, caller(&name)}
      K(patch_attn_fwd_f32_32), K(patch_attn_fwd_f32_64), K(patch_attn_fwd_f32_128),
      K(patch_attn_fwd_f16_32), K(patch_attn_fwd_f16_64), K(patch_attn_fwd_f16_128),
      K(patch_attn_fwd_bf16_32), K(patch_attn_fwd_bf16_64), K(patch_attn_fwd_bf16_128),
      K(patch_attn_fwd_tc_f16_32), K(patch_attn_fwd_tc_f16_64), K(patch_attn_fwd_tc_f16_128),
      K(patch_attn_fwd_tc_bf16_32), K(patch_attn_fwd_tc_bf16_64), K(patch_attn_fwd_tc_bf16_128),
      K(patch_attn_combine_f32), K(patch_attn_combine_f16), K(patch_attn_combine_bf16),
      K(euler_update_f32), K(euler_update_f16), K(euler_update_bf16),
      K(kv_write_f32), K(kv_write_f16), K(kv_write_bf16),
      K(ada_layernorm_f32), K(ada_layernorm_f16), K(ada_layernorm_bf16),
#undef K
  };
  return t;
}

}  // namespace

extern "C" int emu_launch_kernel(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                 void** args) {
  auto it = table().find(name);
  if (it == table().end()) return 1;
  auto fn = it->second;
  emu_launch(dim3{gx, gy, gz}, dim3{bx, 1, 1}, [&] { fn(args); });
  return 0;
}
