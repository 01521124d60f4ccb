// src/cuda/topk/pooled_topk.cu — pooled post-softmax probabilities and their exact top-k (SPEC 4).
//
// One block per (sequence, selection set). With the exact per-head softmax statistics (M_h, L_h)
// from decode_combine and the log2-domain logits s_h[i] of the split pass:
//   P[i] = sum over the set's heads h of 2^(s_h[i] - M_h) / L_h          (pass 1, stored as fp32)
// then a radix select on the bit patterns of the non-negative floats P[i] (their unsigned order is
// their numeric order) finds the k-th largest value T in three digit passes (12 + 12 + 8 bits),
// and an ordered block compaction writes every i with P[i] > T plus the lowest-index ones with
// P[i] == T: the selection is ascending and breaks ties toward the lower index, as the oracle does.
// No sort, no allocation. k = kascade::budget_k(n, rho, k_min, k_multiple) is computed here, on the
// device, from the step's own n.
#include <cuda_runtime.h>

#include <cmath>

#include "../common/cuda_check.h"
#include "../common/device_math.cuh"
#include "../decode/decode_params.h"
#include "kascade/budget.h"

namespace kascade::cuda {
namespace {

constexpr int kTopkThreads = 1024;
constexpr int kWideDigitBits = 12;
constexpr int kWideBins = 1 << kWideDigitBits;
constexpr int kLastDigitBits = 8;
static_assert(2 * kWideDigitBits + kLastDigitBits == 32, "the digits must cover the 32 key bits");

struct RadixState {
  uint32_t prefix;     // the bits of the k-th largest key fixed so far
  uint32_t mask;       // which bits `prefix` fixes
  int remaining;       // how many keys still to take among those matching `prefix`
};

// Given a histogram of the current digit, fixes the digit holding the `remaining`-th largest key.
// Every thread calls it; on return state is updated (from shared memory) for the whole block.
__device__ void select_digit(const int* histogram, int num_bins, int shift, RadixState& state,
                             RadixState* shared_state, int* scan_scratch) {
  const int bins_per_thread = (num_bins + blockDim.x - 1) / blockDim.x;
  // Thread t owns bins from the top: num_bins-1-t*bins_per_thread downward.
  const int top_bin = num_bins - 1 - static_cast<int>(threadIdx.x) * bins_per_thread;
  int owned = 0;
  for (int i = 0; i < bins_per_thread; ++i) {
    const int bin = top_bin - i;
    if (bin >= 0) owned += histogram[bin];
  }
  int total = 0;
  const int above = block_exclusive_sum(owned, scan_scratch, total);
  if (above < state.remaining && state.remaining <= above + owned) {
    int count_above = above;
    for (int i = 0; i < bins_per_thread; ++i) {
      const int bin = top_bin - i;
      const int in_bin = histogram[bin];
      if (state.remaining <= count_above + in_bin) {
        shared_state->prefix = state.prefix | (static_cast<uint32_t>(bin) << shift);
        shared_state->mask = state.mask | (static_cast<uint32_t>(num_bins - 1) << shift);
        shared_state->remaining = state.remaining - count_above;
        break;
      }
      count_above += in_bin;
    }
  }
  __syncthreads();
  state = *shared_state;
}

__device__ __forceinline__ void clear_histogram(int* histogram, int num_bins) {
  for (int i = threadIdx.x; i < num_bins; i += blockDim.x) histogram[i] = 0;
}

__global__ void __launch_bounds__(kTopkThreads) pooled_topk_kernel(const __grid_constant__ PooledTopkParams p) {
  extern __shared__ float2 head_stats[];  // [heads_per_set] (M_h, 1 / L_h)
  __shared__ int histogram[kWideBins];
  __shared__ int scan_scratch[kBlockScanScratch];
  __shared__ RadixState shared_state;

  const int set = blockIdx.x % p.num_sets;
  const int b = blockIdx.x / p.num_sets;
  const int n = min(p.seq_lens[b], p.max_seq_len);
  const int64_t budget = budget_k(n, p.rho, p.k_min, p.k_multiple);
  const int k = static_cast<int>(budget < p.sel_kmax ? budget : p.sel_kmax);
  int32_t* selection = p.sel_indices + (static_cast<int64_t>(b) * p.num_sets + set) * p.sel_kmax;
  if (threadIdx.x == 0) p.sel_counts[b * p.num_sets + set] = k;
  for (int i = k + threadIdx.x; i < p.sel_kmax; i += blockDim.x) selection[i] = -1;
  if (k >= n) {  // the whole context is selected: no scores needed
    for (int i = threadIdx.x; i < n; i += blockDim.x) selection[i] = i;
    return;
  }

  const int first_head = set * p.heads_per_set;
  for (int h = threadIdx.x; h < p.heads_per_set; h += blockDim.x) {
    const float2 ml = p.head_ml[static_cast<int64_t>(b) * p.num_q_heads + first_head + h];
    head_stats[h] = make_float2(ml.x, ml.y > 0.f ? 1.f / ml.y : 0.f);
  }
  clear_histogram(histogram, kWideBins);
  __syncthreads();

  // Pass 1: pooled probabilities, stored, and the histogram of their top digit.
  const float* scores = p.scores + (static_cast<int64_t>(b) * p.num_q_heads + first_head) * p.score_stride;
  float* pooled = p.pooled + (static_cast<int64_t>(b) * p.num_sets + set) * p.score_stride;
  const uint32_t* pooled_bits = reinterpret_cast<const uint32_t*>(pooled);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    float mass = 0.f;
    for (int h = 0; h < p.heads_per_set; ++h) {
      const float2 stats = head_stats[h];
      mass += exp2f(scores[h * p.score_stride + i] - stats.x) * stats.y;
    }
    pooled[i] = mass;
    atomicAdd(&histogram[__float_as_uint(mass) >> (32 - kWideDigitBits)], 1);
  }
  __syncthreads();
  RadixState state{0u, 0u, k};
  select_digit(histogram, kWideBins, 32 - kWideDigitBits, state, &shared_state, scan_scratch);

  // Passes 2 and 3: the next digits among the keys that match the prefix so far.
  const int shifts[2] = {kLastDigitBits, 0};
  const int bins[2] = {kWideBins, 1 << kLastDigitBits};
  for (int pass = 0; pass < 2; ++pass) {
    clear_histogram(histogram, bins[pass]);
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const uint32_t bits = pooled_bits[i];
      if ((bits & state.mask) == state.prefix) atomicAdd(&histogram[(bits >> shifts[pass]) & (bins[pass] - 1)], 1);
    }
    __syncthreads();
    select_digit(histogram, bins[pass], shifts[pass], state, &shared_state, scan_scratch);
  }

  // Ordered compaction: keys above the threshold, then the first `state.remaining` equal to it.
  const uint32_t threshold = state.prefix;
  const int equal_wanted = state.remaining;
  int greater_before = 0;  // running counts over earlier tiles
  int equal_before = 0;
  for (int tile = 0; tile < n; tile += blockDim.x) {
    const int i = tile + threadIdx.x;
    const uint32_t bits = i < n ? pooled_bits[i] : 0u;
    const int greater = (i < n && bits > threshold) ? 1 : 0;
    const int equal = (i < n && bits == threshold) ? 1 : 0;
    // Both flags in one scan: tile totals are at most 1024, so 16 bits each suffice.
    int tile_total = 0;
    const int packed_before = block_exclusive_sum((greater << 16) | equal, scan_scratch, tile_total);
    const int greater_rank = greater_before + (packed_before >> 16);
    const int equal_rank = equal_before + (packed_before & 0xffff);
    const int out_pos = greater_rank + min(equal_rank, equal_wanted);
    if (greater || (equal && equal_rank < equal_wanted)) selection[out_pos] = i;
    greater_before += tile_total >> 16;
    equal_before += tile_total & 0xffff;
  }
}

}  // namespace

void launch_pooled_topk(const PooledTopkParams& params, int batch, cudaStream_t stream) {
  const size_t head_stats_bytes = sizeof(float2) * static_cast<size_t>(params.heads_per_set);
  pooled_topk_kernel<<<batch * params.num_sets, kTopkThreads, head_stats_bytes, stream>>>(params);
  KASCADE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kascade::cuda
