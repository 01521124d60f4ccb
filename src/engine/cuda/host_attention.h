// src/engine/cuda/host_attention.h — the CUDA backend's attention override (backend.h
// set_attention_override): one layer's attention computed on the host by the caller's rule.
//
// The backend keeps q as bf16 [tokens, Hq, D] and the layer's KV cache as bf16 [n, Hkv, D] (the
// identity page table makes the pool one contiguous run of tokens); the override takes the CPU
// oracle's layout, fp32 [heads][rows][D]. HostAttention copies the step's q and the cache rows
// 0..n-1 to the host, widens and transposes them, calls the override, and uploads its output
// (narrowed to bf16, transposed back) where the attention kernels would have written theirs.
//
//   HostAttention host;
//   double keys = host.run(override, layer, first, tokens, shape, q_dev, k_pool, v_pool, att_dev, stream);
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "kascade/engine/backend.h"

namespace kascade::engine::cuda {

// rows x heads x d (row-major) bf16 -> heads x rows x d fp32.
void widen_to_head_major(const uint16_t* row_major, int rows, int heads, int d, float* head_major);
// heads x rows x d fp32 -> rows x heads x d bf16 (round to nearest even); throws kascade::Error
// naming the layer, head and row of the first value that is not finite.
void narrow_to_row_major(const float* head_major, int rows, int heads, int d, int layer, uint16_t* row_major);

struct AttentionShape {
  int hq = 0, hkv = 0, head_dim = 0;
};

class HostAttention {
 public:
  // Runs `attention` for queries first..first+tokens-1 of `layer` over keys 0..first+tokens-1.
  // q: [tokens, Hq, D] bf16; k_cache, v_cache: [first + tokens, Hkv, D] bf16 (contiguous);
  // out: [tokens, Hq, D] bf16, written on `stream` before this returns. Returns the override's
  // count of keys attended.
  double run(const AttentionOverride& attention, int layer, int first, int tokens, const AttentionShape& shape,
             const __nv_bfloat16* q, const __nv_bfloat16* k_cache, const __nv_bfloat16* v_cache,
             __nv_bfloat16* out, cudaStream_t stream);

 private:
  std::vector<uint16_t> raw_q_, raw_k_, raw_v_, raw_out_;
  std::vector<float> q_, k_, v_, out_;
};

}  // namespace kascade::engine::cuda
