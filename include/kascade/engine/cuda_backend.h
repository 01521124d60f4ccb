// kascade/engine/cuda_backend.h — the engine's forward pass on one NVIDIA GPU (bf16, cuBLAS GEMMs,
// fused element-wise kernels, a paged KV cache, attention through the Kascade kernels).
//
// The same Backend interface as the CPU backend (backend.h): one sequence, a growing KV cache,
// dense attention without a plan and the plan's roles with one (SPEC 2-5: layer 0 dense with a
// selection, anchors select, reuse layers read their anchor's selection through the head map).
// Weights are converted from the model's fp32 to bf16 once, at construction; the residual stream
// and every accumulation stay fp32.
//
//   auto backend = kascade::engine::make_cuda_backend(model, plan_or_null, options);
//   std::vector<float> logits = backend->forward(prompt_ids, false);
//
// Throws kascade::Error when this build has no CUDA, when no GPU is present, or when the model's
// shape is outside what the attention kernels support (head dim 64/128, GQA group <= 8).
#pragma once

#include <memory>

#include "kascade/engine/backend.h"

namespace kascade::engine {

// A CUDA backend for `model` on the current device. `plan` (may be null) must outlive it.
std::unique_ptr<Backend> make_cuda_backend(const Model& model, const Plan* plan, const BackendOptions& options);

}  // namespace kascade::engine
