// kascade/engine/cuda_backend.h — the engine's forward pass on one NVIDIA GPU (bf16, cuBLAS GEMMs,
// fused element-wise kernels, a paged KV cache, attention through the Kascade kernels).
//
// The same interfaces as the CPU backend (backend.h): Backend (one sequence) and BatchBackend
// (B sequences advanced together), both over one forward pass: dense attention without a plan and
// the plan's roles with one (SPEC 2-5: layer 0 dense with a selection, anchors select, reuse
// layers read their anchor's selection through the head map). A batch step stacks every
// sequence's new tokens into the GEMMs, runs its single-token sequences as one decode call and its
// prompt chunks as one ragged prefill call. Decode steps replay a CUDA graph of the whole forward
// pass (all layers), captured once per batch size (CudaOptions).
//
// Weights live on the device as CudaWeights, shareable by several backends: converted from a host
// Model's fp32 to bf16, or generated on the GPU from a seed (random weights of any shape, e.g.
// Llama-3.1-8B's, without a host copy). The residual stream and every accumulation stay fp32.
//
//   auto backend = kascade::engine::make_cuda_backend(model, plan_or_null, options);
//   std::vector<float> logits = backend->forward(prompt_ids, false);
//   auto weights = kascade::engine::random_cuda_weights(config, /*seed=*/1);
//   auto batch = kascade::engine::make_cuda_batch_backend(weights, plan_or_null, 8, options, {});
//
// Throws kascade::Error when this build has no CUDA, when no GPU is present, or when the model's
// shape is outside what the attention kernels support (head dim 64/128, GQA group <= 8, no
// sliding window).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "kascade/engine/backend.h"

namespace kascade::engine {

struct ModelConfig;
struct CudaWeights;  // a model's weights on the device (src/engine/cuda/device_weights.h)

// The model's weights rounded to bf16 (nearest even) on the current device.
std::shared_ptr<const CudaWeights> upload_cuda_weights(const Model& model);
// Random weights of `config`'s shapes generated on the device (the same seed, the same weights);
// scaled so that a deep model's activations stay O(1) and its logits finite.
std::shared_ptr<const CudaWeights> random_cuda_weights(const ModelConfig& config, uint64_t seed);
// Device bytes the weights hold.
size_t cuda_weight_bytes(const CudaWeights& weights);

struct CudaOptions {
  // Decode steps (every participating sequence appends one token, no hook or override set)
  // replay a CUDA graph of the whole forward pass, captured at the first step of each batch size
  // and again whenever a buffer it uses had to grow. false: every step launches its kernels.
  bool decode_graphs = true;
  // KV cache tokens allocated per sequence up front (0: 1024, grown by doubling when needed).
  // Sizing it for the longest sequence avoids growth (a copy of the cache) during a run.
  int reserve_tokens = 0;
};

// A CUDA backend for `model` on the current device. `plan` (may be null) must outlive it.
std::unique_ptr<Backend> make_cuda_backend(const Model& model, const Plan* plan, const BackendOptions& options,
                                           const CudaOptions& cuda_options = {});
std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const CudaWeights> weights, const Plan* plan,
                                           const BackendOptions& options, const CudaOptions& cuda_options = {});
// A batch on the GPU, with its decode graphs under the caller's control (a benchmark times the same
// sequences with and without them).
class CudaBatchBackend : public BatchBackend {
 public:
  // Decode graphs on or off from the next step on (CudaOptions::decode_graphs).
  virtual void set_decode_graphs(bool on) = 0;
  virtual int graphs_captured() const = 0;  // graphs captured so far
  virtual int graph_replays() const = 0;    // decode steps replayed from a graph so far
};

// A CUDA batch of `batch` sequences (hooks and overrides are single-sequence features).
std::unique_ptr<CudaBatchBackend> make_cuda_batch_backend(const Model& model, const Plan* plan, int batch,
                                                          const BackendOptions& options,
                                                          const CudaOptions& cuda_options = {});
std::unique_ptr<CudaBatchBackend> make_cuda_batch_backend(std::shared_ptr<const CudaWeights> weights,
                                                          const Plan* plan, int batch, const BackendOptions& options,
                                                          const CudaOptions& cuda_options = {});

}  // namespace kascade::engine
