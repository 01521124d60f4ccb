// kascade/engine/backend.h — one sequence's forward pass through a model, behind an interface
// that the CPU backend implements now and a CUDA backend can implement later.
//
// A backend owns the KV cache of one sequence. forward() appends tokens at positions
// position()..position()+T-1 and returns logits. Attention in every layer goes through the
// plan when one is given (SPEC 2-5: layer 0 dense with a selection, anchors select, reuse
// layers read their anchor's selection through the head map), and is dense otherwise.
//
//   auto backend = kascade::engine::make_backend("cpu", model, plan_or_null, {});
//   std::vector<float> logits = backend->forward(prompt_ids, /*all_logits=*/false);  // [vocab]
//   logits = backend->forward({next_id}, false);
//   double f = backend->stats().keys_read_fraction();
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kascade/tensor.h"

namespace kascade {
struct Plan;
}

namespace kascade::engine {

struct Model;
struct ModelConfig;
struct AttentionSchedule;

// Called for every layer of every forward() with the residual stream entering the layer and the
// attention block's output (after the output projection), both [tokens][dim] (SPEC 6's x_l and
// attn_l(x_l)). The pointers are valid during the call only.
using AttentionHook = std::function<void(int layer, int tokens, int dim, const float* residual, const float* attn_out)>;

// Called for every layer of every forward() with that step's queries and keys after q/k norm
// and RoPE, exactly what attention scores: q [tokens][Hq * D], k [tokens][Hkv * D], for
// positions first_position .. first_position + tokens - 1 (calibration's pooled statistics).
using QueryKeyHook =
    std::function<void(int layer, int first_position, int tokens, const float* q, const float* k)>;

// Keys read by attention, summed over layers, heads and queries: a dense or anchor layer reads
// every causal key (t + 1 for the query at t; anchors rank all of them), a reuse layer its
// selection plus, in prefill, the diagonal of its tile.
struct AttentionStats {
  double keys_read = 0;
  double keys_dense = 0;
  double keys_read_fraction() const { return keys_dense > 0 ? keys_read / keys_dense : 1.0; }
};

// One layer's attention call handed to an AttentionOverride, in the CPU oracle's layout
// (kascade/reference.h): queries at positions first..first+tokens-1 over keys 0..first+tokens-1.
struct LayerAttentionCall {
  int layer = 0;
  int first = 0;   // tokens in the cache before this call
  int tokens = 0;  // queries in this call
  int hq = 0, hkv = 0, head_dim = 0;
  const float* q = nullptr;  // [hq][tokens][head_dim], after q/k norm and RoPE
  const float* k = nullptr;  // [hkv][first + tokens][head_dim], after q/k norm and RoPE
  const float* v = nullptr;  // [hkv][first + tokens][head_dim]
  float* out = nullptr;      // [hq][tokens][head_dim], written by the override
};
// Computes a layer's attention in place of dense attention or the plan (accuracy studies plug
// their selection rules in here) and returns the keys it attended, summed over heads and queries.
using AttentionOverride = std::function<double(const LayerAttentionCall&)>;

struct BackendOptions {
  int threads = 0;            // 0: all hardware threads
  int prefill_chunk = 512;    // tokens per forward step in prefill (rounded to the plan's tile)
  // The CPU backend's KV cache: F16 (half the memory: 180 MiB for the default model at 8192
  // tokens, where F32 takes 360; the CUDA backend's cache is 16-bit too), F32, or F8E4M3 (90
  // MiB: e4m3 codes with per (layer, kv head) scales set from the sequence's first step, see
  // cpu_backend.cpp). Attention accumulates in fp32 either way. The CUDA backend keeps its bf16
  // cache and ignores this.
  DType cpu_kv_cache = DType::F16;
  std::function<void(int done, int total)> on_prefill_progress;  // after each chunk
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // Empties the KV cache (and the anchors' selections).
  virtual void reset() = 0;
  // Tokens in the cache.
  virtual int position() const = 0;
  // Appends `tokens` and returns the logits of the last one ([vocab]) or, with all_logits, of
  // every one ([T][vocab]). Long inputs run in chunks of prefill_chunk tokens.
  virtual std::vector<float> forward(const std::vector<int32_t>& tokens, bool all_logits) = 0;
  virtual AttentionStats stats() const = 0;
  virtual void set_attention_hook(AttentionHook hook) = 0;
  // Backends that cannot expose q and k throw kascade::Error naming themselves.
  virtual void set_query_key_hook(QueryKeyHook hook);
  // While set (non-empty), every layer's attention is the override's instead of dense or the
  // plan's. Backends that cannot run it throw kascade::Error naming themselves.
  virtual void set_attention_override(AttentionOverride attention);
  // Drops the tokens after `position` (0 <= position <= position()): the next forward() appends
  // at `position`, as if the dropped tokens had never been run (a shared prefix, many suffixes).
  virtual void truncate(int position);

  // ---- native selection policies (accuracy studies; the CUDA backend implements them) ----------
  // Whether set_attention_schedule and forward_decode_rows run here.
  virtual bool supports_schedules() const { return false; }
  // While set (non-null), every layer's attention follows the schedule instead of the plan
  // (attention_schedule.h); it is validated against the model first. null: back to the plan.
  // Backends without schedules throw kascade::Error naming themselves.
  virtual void set_attention_schedule(const AttentionSchedule* schedule);
  // Appends `tokens` as decode rows: token t attends as the decode step at position
  // position() + t would (SPEC 4: its own query over keys 0..position() + t), all rows in one
  // pass over the weights. Returns every row's logits [T][vocab]. Throws where unsupported.
  virtual std::vector<float> forward_decode_rows(const std::vector<int32_t>& tokens);
};

// Several independent sequences advanced together (a batch of prompts). Each step stacks the
// new tokens of every sequence, so the weights are read once per step for all of them (decode of
// B sequences costs about the weight traffic of one); each sequence keeps its own KV cache,
// selections and statistics. Prefill goes in chunks, the next chunk of every sequence per step.
class BatchBackend {
 public:
  virtual ~BatchBackend() = default;
  virtual int batch_size() const = 0;
  virtual void reset() = 0;                 // empties every sequence
  virtual int position(int seq) const = 0;
  virtual AttentionStats stats(int seq) const = 0;
  // tokens[b] is appended to sequence b (an empty list leaves it as it is). Returns, for every
  // sequence with new tokens, the logits of its last one ([vocab]); an empty vector otherwise.
  virtual std::vector<std::vector<float>> forward(const std::vector<std::vector<int32_t>>& tokens) = 0;
};

// Throws unless this build can run backend `kind`: "cpu" always; "cuda" when the engine's CUDA
// backend (src/engine/cuda/, include/kascade/engine/cuda_backend.h) is part of the build.
void check_backend_available(const std::string& kind);
// Throws unless backend `kind` computes this model exactly: the CUDA backend has no sliding
// attention window, so a model whose window is shorter than its context is refused there.
// make_backend() calls it; code that constructs a backend itself should too.
void check_backend_supports(const std::string& kind, const ModelConfig& config);

// "cpu" (fp32 arithmetic, threaded) or "cuda". `plan` may be null (dense attention); it must outlive the
// backend and match the model's shape.
std::unique_ptr<Backend> make_backend(const std::string& kind, const Model& model, const Plan* plan,
                                      const BackendOptions& options);
std::unique_ptr<Backend> make_cpu_backend(const Model& model, const Plan* plan, const BackendOptions& options);
// A CPU batch of `batch` sequences (hooks are a single-sequence feature: not offered here).
std::unique_ptr<BatchBackend> make_cpu_batch_backend(const Model& model, const Plan* plan, int batch,
                                                     const BackendOptions& options);

}  // namespace kascade::engine
