// src/engine/cuda/device_weights.h — a model's weights on the GPU, in the layout the CUDA forward
// pass reads, made either from a host Model or directly on the device from a seed.
//
// GEMM weights are bf16 and stacked so that each projection is one GEMM ([wq; wk; wv] and
// [w_gate; w_up]); norms, biases and the RoPE frequencies stay fp32. The random construction
// fills every matrix on the GPU with a counter-hash normal generator, so that a model of
// Llama-3.1-8B's shapes (16 GB of bf16) needs no host copy of its weights.
//
//   std::shared_ptr<const CudaWeights> w = upload_weights(model);           // from fp32 host weights
//   std::shared_ptr<const CudaWeights> r = random_weights(config, /*seed=*/7);
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/device_buffer.h"
#include "kascade/engine/model.h"
#include "layer_kernels.h"

namespace kascade::engine {

struct CudaLayerWeights {
  kascade::cuda::DeviceBuffer attn_norm;  // [dim] fp32
  kascade::cuda::DeviceBuffer wqkv;       // [(hq + 2 hkv) D][dim] bf16
  kascade::cuda::DeviceBuffer bqkv;       // [(hq + 2 hkv) D] fp32 (qwen2), else empty
  kascade::cuda::DeviceBuffer q_norm;     // [D] fp32 (qwen3), else empty
  kascade::cuda::DeviceBuffer k_norm;     // [D] fp32 (qwen3), else empty
  kascade::cuda::DeviceBuffer wo;         // [dim][hq D] bf16
  kascade::cuda::DeviceBuffer ffn_norm;   // [dim] fp32
  kascade::cuda::DeviceBuffer w_gate_up;  // [2 ffn][dim] bf16
  kascade::cuda::DeviceBuffer w_down;     // [dim][ffn] bf16
};

struct CudaWeights {
  ModelConfig config;
  std::vector<CudaLayerWeights> layers;
  kascade::cuda::DeviceBuffer token_embd;   // [vocab][dim] bf16
  kascade::cuda::DeviceBuffer output;       // [vocab][dim] bf16, empty when tied to token_embd
  kascade::cuda::DeviceBuffer output_norm;  // [dim] fp32
  kascade::cuda::DeviceBuffer inv_freq;     // [D / 2] fp32 RoPE frequencies, llama3 factors divided in

  const cuda::bf16* output_matrix() const {
    return output.empty() ? token_embd.as<cuda::bf16>() : output.as<cuda::bf16>();
  }
  size_t bytes() const;  // device memory held
};

// The model's fp32 weights rounded to bf16 (nearest even) on the current device.
std::shared_ptr<const CudaWeights> upload_weights(const Model& model);

// Random weights of `config`'s shapes, generated on the device from `seed` (the same seed gives
// the same weights). Scales keep a deep model's residual stream O(1) and its logits finite:
// embeddings and the output matrix N(0, 1); norms N(1, 0.1); q and k projections
// N(0, 1.5 / sqrt(dim)), v and gate/up N(0, 1 / sqrt(dim)); the attention and FFN output
// projections N(0, 0.5 / sqrt(fan-in)); biases N(0, 0.1); q/k norms N(1.5, 0.1).
std::shared_ptr<const CudaWeights> random_weights(const ModelConfig& config, uint64_t seed);

namespace cuda {
// data[i] = mean + stddev * N(0, 1) for i < count, as bf16 (`as_bf16`) or fp32; the normal comes
// from a splitmix64 hash of (seed, i) through Box-Muller, so any element is reproducible alone.
void fill_normal(void* data, bool as_bf16, size_t count, float mean, float stddev, uint64_t seed,
                 cudaStream_t stream);
}  // namespace cuda

}  // namespace kascade::engine
