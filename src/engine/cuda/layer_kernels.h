// src/engine/cuda/layer_kernels.h — the fused element-wise kernels of the CUDA forward pass.
//
// Everything between the GEMMs (cuBLAS) and attention (src/cuda): embedding gather, residual add
// fused with RMSNorm, the q/k/v epilogue (bias, per-head q/k norm, RoPE incl. llama3 frequency
// factors, cache append) and SwiGLU. The residual stream and GEMM outputs are fp32; everything a
// GEMM or attention reads is bf16. All pointers are device pointers; calls are asynchronous on
// `stream` and allocate nothing.
//
//   embed_rows(ids, T, table, dim, x, s);                           // x[t] = table[ids[t]]
//   add_rms_norm(x, delta, w, nullptr, rows, dim, eps, h, s);       // x += delta; h = norm(x) * w
//   qkv_epilogue(p, s);                                             // q out, k/v into the cache
//   swiglu(gate_up, T, ffn, act, s);                                // act = silu(gate) * up
//   gemv(x, in, w, out, y, s);                                      // y = x w^T for one row
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace kascade::engine::cuda {

using bf16 = __nv_bfloat16;

// x[t][:] = float(table[ids[t]][:]) for t < tokens.
void embed_rows(const int32_t* ids, int tokens, const bf16* table, int dim, float* x, cudaStream_t stream);

// For each output row i of `rows`, with r = row_ids ? row_ids[i] : i (a device array): x[r] +=
// delta[r] (skipped when delta is null; x is updated in place), then
// out[i] = x[r] / sqrt(mean(x[r]^2) + eps) * weight in bf16. row_ids gathers the rows whose logits
// a batch step needs.
void add_rms_norm(float* x, const float* delta, const float* weight, const int32_t* row_ids, int rows, int width,
                  float eps, bf16* out, cudaStream_t stream);

// How RoPE pairs a head's dimensions (model.h RopeStyle): (2i, 2i+1) or (i, i + D/2).
enum class RopePairs { Adjacent, Halves };

// The projections' epilogue for `tokens` tokens, each at its own position and cache slot (the
// tokens of a batch step belong to different sequences).
struct QkvEpilogueParams {
  const float* qkv = nullptr;      // [tokens, (hq + 2 hkv) * D]: q heads, then k heads, then v heads
  const float* bias = nullptr;     // [(hq + 2 hkv) * D] or null (qwen2)
  const float* q_norm = nullptr;   // [D] or null: per-head RMSNorm of q before RoPE (qwen3)
  const float* k_norm = nullptr;   // [D] or null
  const float* inv_freq = nullptr; // [D / 2] RoPE frequencies (llama3 factors already divided in)
  float position_scale = 1.f;      // positions are divided by this (linear rope scaling)
  RopePairs pairs = RopePairs::Adjacent;
  float eps = 1e-5f;               // of q_norm / k_norm
  int tokens = 0;
  int hq = 0;
  int hkv = 0;
  int head_dim = 0;                // 64 or 128
  const int32_t* positions = nullptr;  // [tokens] device: each token's position (RoPE)
  // [tokens] device: each token's cache slot, page * page_size + position % page_size; element
  // (token, h, d) goes to pool[slot / page_size * page_stride + slot % page_size * token_stride + h * D + d].
  const int32_t* slots = nullptr;
  bf16* q_out = nullptr;           // [tokens, hq, D]
  bf16* k_pool = nullptr;          // this layer's paged cache
  bf16* v_pool = nullptr;
  int page_size = 16;
  int64_t page_stride = 0;
  int64_t token_stride = 0;
};
void qkv_epilogue(const QkvEpilogueParams& p, cudaStream_t stream);

// out[t][i] = silu(gate_up[t][i]) * gate_up[t][ffn + i] in bf16.
void swiglu(const float* gate_up, int tokens, int ffn, bf16* out, cudaStream_t stream);

// The GEMM of a one-row step (decode of one sequence): y[o] = sum_k x[k] w[o][k], fp32
// accumulation and output. With one row the product is a pass over the weights; cuBLAS's kernels
// for it read them more slowly than this one, which streams each weight row once with 16-byte
// loads (one warp per output). Measured on H100 in the whole engine at 8k, batch 1: 8B shape
// decode 9.25 -> 8.8-9.1 ms per token, SmolLM2 shape 1.86 -> 1.41-1.46 ms; a variant for up to 8
// rows lost to cuBLAS's tensor-core kernels at 8 rows (18.0 vs 16.0 ms on the 8B shape), so
// batches stay on cuBLAS. `in` must be a multiple of 8 and
// the rows 16-byte aligned.
void gemv(const bf16* x, int in, const bf16* w, int out, float* y, cudaStream_t stream);

}  // namespace kascade::engine::cuda
