// src/engine/cuda/policy_selection.h — the GPU selection rules of the comparison policies that
// are not a pooled top-k (attention_schedule.h: Streaming, Quest), written into a decode
// selection buffer (kascade/attention.h Selection, one tile) that decode_reuse then reads.
//
// Both compute the budget k(n) = budget_k(n, rho, k_min, k_multiple) on the device from each
// row's own n = kv.seq_lens[b] and write, per (row b, set s), the selected key positions
// ascending and padded with -1 to selection.k_max, and counts[b * num_sets + s]. They read only
// device memory and allocate nothing (capturable).
//   streaming_select  sinks 0..min(4, k)-1, then the most recent k - sinks keys (n-(k-sinks)..n-1);
//                     every set gets the same row (StreamingLLM).
//   quest_select      set g = kv head g: pages of 16 positions; a page's bound is the max over the
//                     group's query heads of sum_d max(q_d * min_d, q_d * max_d) over the page's
//                     keys; the k keys whose pages rank highest (ties: lower position), i.e.
//                     whole pages in bound order, the last one cut from its lowest position (Quest).
//
//   policy_select::streaming(args, stream);  policy_select::quest(args, stream);
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kascade/attention.h"
#include "kascade/kv_cache.h"
#include "kascade/types.h"

namespace kascade::engine::cuda::policy_select {

constexpr int kSinkTokens = 4;   // as kascade::eval::kSinkTokens
constexpr int kQuestPage = 16;   // as kascade::eval::kQuestPage

struct Args {
  const void* q = nullptr;  // [batch, hq, D] bf16 (decode rows' queries after RoPE)
  PagedKV kv;               // bf16, kv.batch rows, kv.seq_lens[b] = n of row b
  int num_q_heads = 0;
  int64_t max_seq_len = 0;  // bounds every kv.seq_lens[b] (DecodeShape::max_seq_len)
  SparsityParams sparsity;  // rho, k_min, k_multiple (pooling: Group for Quest, any for streaming)
  Selection selection;       // decode geometry: [batch, num_sets, 1, k_max]
};

void streaming(const Args& args, cudaStream_t stream);
void quest(const Args& args, cudaStream_t stream);

}  // namespace kascade::engine::cuda::policy_select
