// src/cuda/decode/decode_params.h — the POD parameter blocks and role policies of the decode family.
//
// Layering: decode_split_kernel.cuh (one pass over a split of the keys of one (sequence, kv head),
// for every query head of the group) -> decode_combine (merges the splits, normalises) -> for the
// selecting roles, topk/pooled_topk (pooled probabilities, radix select). decode_launch.cu composes
// them per Role; its host-side chooser (decode_launch) fixes splits and the workspace layout.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../common/device_math.cuh"

namespace kascade::cuda {

constexpr int kDecodeThreads = 128;  // 4 warps per (split, kv head, sequence) block
constexpr int kMaxGroupCap = 8;      // largest GQA group: heads fill rows 0..7 of the 16-row MMA tile
constexpr int kMaxDecodeSplits = 256;

// What one split pass computes. Roles are policies of the single split kernel template.
struct DenseSplit {   // exact attention over keys 0..n-1
  static constexpr bool kReadsValues = true;
  static constexpr bool kWritesScores = false;
  static constexpr bool kIndexedKeys = false;
};
struct Layer0Split {  // exact attention and the scaled logits for the top-k
  static constexpr bool kReadsValues = true;
  static constexpr bool kWritesScores = true;
  static constexpr bool kIndexedKeys = false;
};
struct ScoresSplit {  // anchor pass 1: logits and softmax statistics only (reads K, not V)
  static constexpr bool kReadsValues = false;
  static constexpr bool kWritesScores = true;
  static constexpr bool kIndexedKeys = false;
};
struct SparseSplit {  // anchor pass 2 and reuse: attention over a selection's key positions
  static constexpr bool kReadsValues = true;
  static constexpr bool kWritesScores = false;
  static constexpr bool kIndexedKeys = true;
};

struct DecodeSplitParams {
  const void* q;                 // [B, Hq, D] storage dtype
  const void* k;                 // paged pool, element (page, slot, kv head, d) by the strides below
  const void* v;                 // same layout as k
  int64_t page_stride;           // elements
  int64_t token_stride;          // elements
  int64_t head_stride;           // elements
  FastDivmod page_size;          // position -> (page slot in the table, offset in the page)
  const int32_t* page_indptr;    // [B + 1]
  const int32_t* page_indices;   // [page_indptr[B]]
  const int32_t* seq_lens;       // [B]
  int max_seq_len;               // clamp for seq_lens (buffers are sized for it)
  int num_q_heads;
  int group;                     // Hq / Hkv
  float scale_log2;              // softmax scale * log2(e): logits are kept in the log2 domain
  int num_splits;
  float* partial_out;            // [B, Hq, num_splits, D] unnormalised fp32 accumulators
  float2* partial_ml;            // [B, Hq, num_splits] (running max in log2 domain, sum of exp2)
  float* scores;                 // [B, Hq, score_stride] log2-domain logits (score roles only)
  int64_t score_stride;
  const int32_t* sel_indices;    // [B, num_sets, sel_kmax] (sparse role only)
  const int32_t* sel_counts;     // [B, num_sets]
  const int32_t* head_map;       // [Hkv] set read by each kv head, nullptr = identity
  int num_sets;                  // 1: every kv head reads set 0 (all-heads pooling)
  int sel_kmax;
};

struct DecodeCombineParams {
  const float* partial_out;      // [B * Hq, num_splits, D]
  const float2* partial_ml;      // [B * Hq, num_splits]
  void* out;                     // [B * Hq, D] storage dtype, or nullptr (statistics only)
  float2* head_ml;               // [B * Hq] (max, sum) over all splits, or nullptr
  int rows;                      // B * Hq
  int num_splits;
  int head_dim;
};

struct PooledTopkParams {
  const float* scores;           // [B, Hq, score_stride] log2-domain logits
  int64_t score_stride;
  const float2* head_ml;         // [B, Hq] (max, sum) of exp2 over keys 0..n-1
  float* pooled;                 // [B, num_sets, score_stride] scratch: pooled probabilities
  int32_t* candidates;           // [B, num_sets, score_stride] scratch: keys of the threshold's bin
  int* digit_histogram;          // [B, num_sets, 4096] scratch (mass_chunks > 1 only)
  int mass_chunks;               // blocks per set computing the pooled masses (1: fused)
  int32_t* sel_indices;          // [B, num_sets, sel_kmax]
  int32_t* sel_counts;           // [B, num_sets]
  const int32_t* seq_lens;       // [B]
  int max_seq_len;
  int num_q_heads;
  int heads_per_set;             // G (group pooling) or Hq (all-heads pooling)
  int num_sets;
  int sel_kmax;
  double rho;
  int k_min;
  int k_multiple;
};

// Host launchers (explicitly instantiated per storage type and head dim; see instantiations/).
template <typename T, int kHeadDim, typename Role>
void launch_decode_split(const DecodeSplitParams& params, dim3 grid, cudaStream_t stream);

template <typename T>
void launch_decode_combine(const DecodeCombineParams& params, cudaStream_t stream);

constexpr int kTopkDigitBins = 4096;  // bins of the first radix digit (12 bits)
void launch_pooled_topk(const PooledTopkParams& params, int batch, cudaStream_t stream);

}  // namespace kascade::cuda
