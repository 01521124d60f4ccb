// src/engine/cuda/cuda_core.h — the CUDA forward pass over any number of sequences at once, the
// one code path under both CUDA backends (cuda_backend.h: one sequence is a batch of one).
//
// A step takes one segment per participating sequence (its next tokens) and runs them together:
// every GEMM over the stacked rows of all segments (the weights are read once per step), the
// q/k/v epilogue with each token's own position and cache slot, and attention as at most two
// calls per layer: one decode call for the segments of one token (ragged lengths, one batch) and
// one prefill call for the longer ones (ragged chunks through q_indptr). A segment of one token is
// a decode step and a longer one prefill, exactly as the CPU backend splits them, so both compute
// the same SPEC roles.
//
// KV cache: pages of kPageSize tokens in one pool per layer shared by all sequences; each sequence
// owns a list of pages (its page table). The pool grows by doubling (pages are copied, indices stay
// valid). Selections: one device buffer per anchor and phase, written by the anchor's call and
// read by its reuse layers within the same step. The attention calls' launch layout (their shapes,
// each layer's selection, the workspace) is made once per step and used by every layer.
//
// CUDA graphs: a step whose segments are all single decode tokens (and that has no hook or
// override, which call back to the host inside the pass) replays a graph of the whole forward pass,
// captured at the first such step of each batch size. Everything that changes between steps
// (token ids, positions, cache slots, lengths, page tables) lives in device buffers that the step
// rewrites before the replay; the graphs are captured again after any buffer they use moved (the
// cache or a scratch buffer grew, or a sequence outgrew the length bound that sizes the decode
// grids and selections). A capture that fails is an error that says how to run without graphs.
//
//   CudaCore core(weights, plan, options, cuda_options, /*sequences=*/B);
//   CudaSequence s;  std::vector<CudaSegment> segs{{&s, ids.data(), n, logits.data(), false}};
//   core.step(segs);
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "common/device_buffer.h"
#include "device_weights.h"
#include "host_attention.h"
#include "kascade/attention.h"
#include "kascade/attention_prefill.h"
#include "kascade/engine/attention_schedule.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/cuda_backend.h"
#include "kascade/types.h"

namespace kascade {
struct Plan;
}

namespace kascade::engine {

constexpr int kPageSize = 16;  // tokens per KV page (DESIGN's default)

// One sequence's state: its cached tokens, the pool pages that hold them, its statistics.
struct CudaSequence {
  int n = 0;
  std::vector<int32_t> pages;  // page p holds positions p * kPageSize .. (p + 1) * kPageSize - 1
  AttentionStats stats;
};

// The tokens one sequence appends in a step, and where its logits go.
struct CudaSegment {
  CudaSequence* seq = nullptr;
  const int32_t* tokens = nullptr;
  int count = 0;
  float* logits = nullptr;  // [count or 1][vocab], or null for none
  bool all_logits = false;
  // Every token a decode row (backend.h forward_decode_rows): token t attends as the decode step
  // at position n + t, in the step's decode call.
  bool decode_rows = false;
};

template <typename Tensors, typename Shape>
struct PhaseCalls;  // the decode_* or prefill_* entry points by role (cuda_core.cpp)

class CudaCore {
 public:
  using Sequence = CudaSequence;
  using Segment = CudaSegment;
  static Segment segment(Sequence* seq, const int32_t* tokens, int count, float* logits, bool all_logits) {
    return Segment{seq, tokens, count, logits, all_logits};
  }

  CudaCore(std::shared_ptr<const CudaWeights> weights, const Plan* plan, const BackendOptions& options,
           const CudaOptions& cuda_options, int sequences);
  ~CudaCore();
  CudaCore(const CudaCore&) = delete;
  CudaCore& operator=(const CudaCore&) = delete;

  int vocab() const { return c_.vocab; }
  int chunk() const { return chunk_; }
  const ModelConfig& config() const { return c_; }
  const BackendOptions& options() const { return options_; }
  int graphs_captured() const { return graphs_captured_; }
  int graph_replays() const { return graph_replays_; }
  void set_decode_graphs(bool on) { cuda_options_.decode_graphs = on; }

  void set_attention_hook(AttentionHook hook) { hook_ = std::move(hook); }
  void set_query_key_hook(QueryKeyHook hook) { qk_hook_ = std::move(hook); }
  void set_attention_override(AttentionOverride attention) { override_ = std::move(attention); }
  // A policy's schedule in place of the plan's (null: the plan's again); validated here.
  void set_attention_schedule(const AttentionSchedule* schedule);

  void check_tokens(const std::vector<int32_t>& tokens) const;
  // Empties the sequence and returns its pages to the pool.
  void reset(CudaSequence& s);
  // Keeps the sequence's first `position` tokens (pages past them go back to the pool).
  void truncate(CudaSequence& s, int position);
  // Nothing to do ahead of a forward(): each step takes its pages from the pool, which
  // CudaOptions::reserve_tokens can size up front.
  void reserve(CudaSequence&, int /*positions*/) {}
  // Runs every segment's tokens at its sequence's next positions and writes the requested logits
  // (segments are reordered: single tokens first).
  void step(std::vector<CudaSegment>& segments);

 private:
  struct Geometry;  // the current step's layout, its attention calls' included (cuda_core.cpp)
  struct SelectionSlot {
    kascade::cuda::DeviceBuffer decode_indices, decode_counts, prefill_indices, prefill_counts;
  };

  void use_schedule(const AttentionSchedule* schedule);  // installs head maps, slots, budget
  const LayerSchedule* layer_schedule(int layer) const;   // null: dense (no plan, no schedule)
  SparsityParams layer_sparsity(const LayerSchedule& ls) const;
  void grow(kascade::cuda::DeviceBuffer& buffer, size_t bytes);  // reserve; a moved buffer drops the graphs
  void drop_graphs();
  void ensure_pages(CudaSequence& s, int tokens);
  void grow_pool(int pages);
  void release_pages(CudaSequence& s, size_t keep);
  void prepare(Geometry& g);
  void lay_out_attention(Geometry& g);
  void upload_geometry(const Geometry& g);
  void run_forward(const Geometry& g);
  void replay_graph(const Geometry& g);
  void attention(int layer, const Geometry& g);
  void decode_attention(int layer, const Geometry& g);
  void prefill_attention(int layer, const Geometry& g);
  template <typename Tensors, typename Shape>
  void attend_layer(int layer, const PhaseCalls<Tensors, Shape>& calls, const Tensors& t, const Shape& shape,
                    const std::vector<Selection>& selections, Workspace ws, bool dense_only);
  // A comparison policy's own selection rule (decode only; prefill has no kernel for it).
  void select_by_policy(int layer, const LayerSchedule& ls, const DecodeTensors& t, const DecodeShape& shape,
                        const SparsityParams& sp, const Selection& sel);
  void select_by_policy(int layer, const LayerSchedule& ls, const PrefillTensors& t, const PrefillShape& shape,
                        const SparsityParams& sp, const Selection& sel);
  void overridden_attention(int layer, const Geometry& g);
  void call_query_key_hook(int layer, const Geometry& g);
  void call_attention_hook(int layer, const Geometry& g);
  void copy_cache_rows(const kascade::cuda::DeviceBuffer& pool, const CudaSequence& s, int first, int count,
                       void* dst, cudaMemcpyKind kind);
  void count_keys(const CudaSegment& segment);
  void gemm(const cuda::bf16* x, int rows, int in, const cuda::bf16* w, int out, float* y);
  DecodeShape decode_shape(int batch) const;
  PagedKV paged_kv(int batch, const int32_t* page_indptr, const int32_t* seq_lens, const int32_t* page_indices) const;
  PagedKV layer_kv(int layer, const PagedKV& step_kv) const;

  std::shared_ptr<const CudaWeights> w_;
  const ModelConfig& c_;
  const Plan* plan_;
  std::unique_ptr<AttentionSchedule> plan_schedule_;    // the plan's roles (null without a plan)
  std::unique_ptr<AttentionSchedule> policy_schedule_;  // set_attention_schedule's, while set
  const AttentionSchedule* schedule_ = nullptr;          // the one in force (null: dense)
  BackendOptions options_;
  CudaOptions cuda_options_;
  SparsityParams sparsity_;
  int sequences_;
  int chunk_ = 512;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;

  // KV cache
  std::vector<kascade::cuda::DeviceBuffer> k_pools_, v_pools_;  // per layer [pages, kPageSize, Hkv, D] bf16
  std::vector<kascade::cuda::DeviceBuffer> head_maps_;          // per reuse layer [Hkv] int32 (empty: identity)
  int pool_pages_ = 0;
  std::vector<int32_t> free_pages_;  // descending, so that pop_back hands out the lowest page
  int64_t length_bound_ = 0;         // DecodeShape::max_seq_len: bounds every sequence's length

  // step geometry: host staging (pinned) and its device copy
  int32_t* host_meta_ = nullptr;
  size_t host_meta_ints_ = 0;
  kascade::cuda::DeviceBuffer meta_;
  float* logits_staging_ = nullptr;  // pinned [rows][vocab]
  size_t logits_staging_floats_ = 0;

  std::vector<SelectionSlot> selections_;  // per anchor slot
  kascade::cuda::DeviceBuffer workspace_, cublas_workspace_;
  kascade::cuda::DeviceBuffer x_, h_, qkv_, q_, att_, o_, gate_up_, act_, logits_, kv_gather_k_, kv_gather_v_;

  // graphs by decode batch size
  std::map<int, cudaGraphExec_t> graphs_;
  int graphs_captured_ = 0;
  int graph_replays_ = 0;

  AttentionHook hook_;
  QueryKeyHook qk_hook_;
  AttentionOverride override_;
  cuda::HostAttention host_attention_;
  std::vector<float> hook_residual_, hook_attn_, hook_q_, hook_k_;
  std::vector<uint16_t> hook_raw_q_, hook_raw_k_;
};

}  // namespace kascade::engine
