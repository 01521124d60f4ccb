// src/cuda/topk/pooled_topk.cu — pooled post-softmax probabilities and their exact top-k (SPEC 4).
//
// One block per (sequence, selection set). With the exact per-head softmax statistics (M_h, L_h)
// from decode_combine and the log2-domain logits s_h[i] of the split pass:
//   P[i] = sum over the set's heads h of 2^(s_h[i] - M_h) / L_h          (pass 1, stored as fp32)
// then a radix select on the bit patterns of the non-negative floats P[i] (their unsigned order is
// their numeric order) finds the k-th largest value T in three digits (12 + 12 + 8 bits): the first
// from a histogram built in pass 1, the other two over the candidates of the threshold's first-digit
// bin only (collected in pass 2), and an ordered block compaction (pass 3) writes every i with
// P[i] > T plus the lowest-index ones with P[i] == T: the selection is ascending and breaks ties
// toward the lower index, as the oracle does. Full passes read 16 bytes (4 keys) per thread.
// With few sets (small batches) pass 1 runs first in its own kernel over chunks of the keys.
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

// Measured (H100, 128k keys): 512 threads per block made layer 0 0.3 % (batch 64) to 12 % (batch 1)
// slower than 1024.
constexpr int kTopkThreads = 1024;
constexpr int kWideDigitBits = 12;
constexpr int kWideBins = 1 << kWideDigitBits;
static_assert(kWideBins == kTopkDigitBins, "the workspace histogram is sized by kTopkDigitBins");
constexpr int kLastDigitBits = 8;
static_assert(2 * kWideDigitBits + kLastDigitBits == 32, "the digits must cover the 32 key bits");

constexpr int kKeysPerVector = 4;  // keys per 16-byte load in the full passes

struct RadixState {
  uint32_t prefix;     // the bits of the k-th largest key fixed so far
  uint32_t mask;       // which bits `prefix` fixes
  int remaining;       // how many keys still to take among those matching `prefix`
  int collected;       // candidates gathered so far (pass 2's shared counter)
};

__device__ __forceinline__ int top_digit(float mass) { return __float_as_uint(mass) >> (32 - kWideDigitBits); }

// bits[e] = pooled_bits[first + e] for first + e < n (a 16-byte load when all four exist).
__device__ __forceinline__ void load_bits4(const uint32_t* pooled_bits, int first, int n, uint32_t (&bits)[4]) {
  if (first + kKeysPerVector <= n) {
    const uint4 v = reinterpret_cast<const uint4*>(pooled_bits)[first / kKeysPerVector];
    bits[0] = v.x;
    bits[1] = v.y;
    bits[2] = v.z;
    bits[3] = v.w;
  } else {
#pragma unroll
    for (int e = 0; e < kKeysPerVector; ++e) bits[e] = first + e < n ? pooled_bits[first + e] : 0u;
  }
}

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
        shared_state->collected = state.collected;
        break;
      }
      count_above += in_bin;
    }
  }
  __syncthreads();
  state = *shared_state;
  __syncthreads();  // everyone has read it before shared_state is written again
}

__device__ __forceinline__ void clear_histogram(int* histogram, int num_bins) {
  for (int i = threadIdx.x; i < num_bins; i += blockDim.x) histogram[i] = 0;
}

// Pooled probabilities of keys [begin, end) of set `set` of sequence b, stored in p.pooled, and
// their top digits counted in the shared `histogram`. begin is a multiple of 4: four keys per
// thread and step (16-byte loads and stores; rows are 16-byte aligned, score_stride % 4 == 0).
__device__ void pooled_mass_range(const PooledTopkParams& p, int b, int set, int begin, int end,
                                  const float2* head_stats, int* histogram) {
  const int first_head = set * p.heads_per_set;
  const float* scores = p.scores + (static_cast<int64_t>(b) * p.num_q_heads + first_head) * p.score_stride;
  float* pooled = p.pooled + (static_cast<int64_t>(b) * p.num_sets + set) * p.score_stride;
  const int vec_end = begin + (end - begin) / kKeysPerVector * kKeysPerVector;
  for (int v = begin / kKeysPerVector + threadIdx.x; v < vec_end / kKeysPerVector; v += blockDim.x) {
    float4 mass = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int h = 0; h < p.heads_per_set; ++h) {
      const float2 stats = head_stats[h];
      const float4 s = reinterpret_cast<const float4*>(scores + h * p.score_stride)[v];
      mass.x += exp2f(s.x - stats.x) * stats.y;
      mass.y += exp2f(s.y - stats.x) * stats.y;
      mass.z += exp2f(s.z - stats.x) * stats.y;
      mass.w += exp2f(s.w - stats.x) * stats.y;
    }
    reinterpret_cast<float4*>(pooled)[v] = mass;
    atomicAdd(&histogram[top_digit(mass.x)], 1);
    atomicAdd(&histogram[top_digit(mass.y)], 1);
    atomicAdd(&histogram[top_digit(mass.z)], 1);
    atomicAdd(&histogram[top_digit(mass.w)], 1);
  }
  for (int i = vec_end + threadIdx.x; i < end; i += blockDim.x) {
    float mass = 0.f;
    for (int h = 0; h < p.heads_per_set; ++h) {
      const float2 stats = head_stats[h];
      mass += exp2f(scores[h * p.score_stride + i] - stats.x) * stats.y;
    }
    pooled[i] = mass;
    atomicAdd(&histogram[top_digit(mass)], 1);
  }
}

// Loads (M_h, 1 / L_h) of the set's heads into shared memory.
__device__ void load_head_stats(const PooledTopkParams& p, int b, int set, float2* head_stats) {
  const int first_head = set * p.heads_per_set;
  for (int h = threadIdx.x; h < p.heads_per_set; h += blockDim.x) {
    const float2 ml = p.head_ml[static_cast<int64_t>(b) * p.num_q_heads + first_head + h];
    head_stats[h] = make_float2(ml.x, ml.y > 0.f ? 1.f / ml.y : 0.f);
  }
}

// Pass 1 spread over p.mass_chunks blocks per set (grid: chunks x sets), for batches whose
// sets alone would leave most multiprocessors idle; the histograms meet in global memory
// (p.digit_histogram, zeroed before the launch).
__global__ void __launch_bounds__(kTopkThreads) pooled_mass_kernel(const __grid_constant__ PooledTopkParams p) {
  extern __shared__ float2 head_stats[];  // [heads_per_set]
  __shared__ int histogram[kWideBins];
  const int set = blockIdx.y % p.num_sets;
  const int b = blockIdx.y / p.num_sets;
  const int n = min(p.seq_lens[b], p.max_seq_len);
  const int64_t budget = budget_k(n, p.rho, p.k_min, p.k_multiple);
  if (budget >= n) return;  // the whole context is selected; pooled_topk_kernel needs no masses
  const int chunk = ((n + p.mass_chunks - 1) / p.mass_chunks + kKeysPerVector - 1) / kKeysPerVector * kKeysPerVector;
  const int begin = min(n, static_cast<int>(blockIdx.x) * chunk);
  const int end = min(n, begin + chunk);
  load_head_stats(p, b, set, head_stats);
  clear_histogram(histogram, kWideBins);
  __syncthreads();
  pooled_mass_range(p, b, set, begin, end, head_stats, histogram);
  __syncthreads();
  int* global_histogram = p.digit_histogram + (static_cast<int64_t>(b) * p.num_sets + set) * kWideBins;
  for (int i = threadIdx.x; i < kWideBins; i += blockDim.x) {
    if (histogram[i] != 0) atomicAdd(&global_histogram[i], histogram[i]);
  }
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

  load_head_stats(p, b, set, head_stats);
  clear_histogram(histogram, kWideBins);
  __syncthreads();

  // Pass 1: pooled probabilities, stored, and the histogram of their top digit (already done by
  // pooled_mass_kernel's blocks when the sets are too few to fill the GPU).
  float* pooled = p.pooled + (static_cast<int64_t>(b) * p.num_sets + set) * p.score_stride;
  const uint32_t* pooled_bits = reinterpret_cast<const uint32_t*>(pooled);
  if (p.mass_chunks > 1) {
    const int* global_histogram = p.digit_histogram + (static_cast<int64_t>(b) * p.num_sets + set) * kWideBins;
    for (int i = threadIdx.x; i < kWideBins; i += blockDim.x) histogram[i] = global_histogram[i];
  } else {
    pooled_mass_range(p, b, set, 0, n, head_stats, histogram);
  }
  __syncthreads();
  RadixState state{0u, 0u, k, 0};
  select_digit(histogram, kWideBins, 32 - kWideDigitBits, state, &shared_state, scan_scratch);

  // Pass 2: the keys in the threshold's top-digit bin are the only ones
  // whose fate is open; collect their positions (in any order: the rest is histograms).
  int32_t* candidates = p.candidates + (static_cast<int64_t>(b) * p.num_sets + set) * p.score_stride;
  if (threadIdx.x == 0) shared_state.collected = 0;
  __syncthreads();
  const int lane = threadIdx.x % kWarpSize;
  for (int base = 0; base < n; base += blockDim.x * kKeysPerVector) {
    const int first = base + threadIdx.x * kKeysPerVector;
    uint32_t bits[kKeysPerVector];
    load_bits4(pooled_bits, first, n, bits);
    int mine = 0;
#pragma unroll
    for (int e = 0; e < kKeysPerVector; ++e) mine += (first + e < n && (bits[e] & state.mask) == state.prefix) ? 1 : 0;
    const int inclusive = warp_inclusive_sum(mine);
    int warp_base = 0;
    if (lane == kWarpSize - 1 && inclusive > 0) warp_base = atomicAdd(&shared_state.collected, inclusive);
    int slot = __shfl_sync(kFullMask, warp_base, kWarpSize - 1) + inclusive - mine;
#pragma unroll
    for (int e = 0; e < kKeysPerVector; ++e) {
      if (first + e < n && (bits[e] & state.mask) == state.prefix) candidates[slot++] = first + e;
    }
  }
  __syncthreads();
  const int num_candidates = shared_state.collected;

  // Passes 3 and 4: the remaining digits, over the candidates only.
  const int shifts[2] = {kLastDigitBits, 0};
  const int bins[2] = {kWideBins, 1 << kLastDigitBits};
  for (int pass = 0; pass < 2; ++pass) {
    clear_histogram(histogram, bins[pass]);
    __syncthreads();
    for (int j = threadIdx.x; j < num_candidates; j += blockDim.x) {
      const uint32_t bits = pooled_bits[candidates[j]];
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
  for (int base = 0; base < n; base += blockDim.x * kKeysPerVector) {
    const int first = base + threadIdx.x * kKeysPerVector;
    uint32_t bits[kKeysPerVector];
    load_bits4(pooled_bits, first, n, bits);
    int greater = 0, equal = 0;
#pragma unroll
    for (int e = 0; e < kKeysPerVector; ++e) {
      greater += (first + e < n && bits[e] > threshold) ? 1 : 0;
      equal += (first + e < n && bits[e] == threshold) ? 1 : 0;
    }
    // Both counts in one scan: a tile holds 4096 keys, so 16 bits each suffice.
    int tile_total = 0;
    const int packed_before = block_exclusive_sum((greater << 16) | equal, scan_scratch, tile_total);
    int greater_rank = greater_before + (packed_before >> 16);
    int equal_rank = equal_before + (packed_before & 0xffff);
#pragma unroll
    for (int e = 0; e < kKeysPerVector; ++e) {
      if (first + e >= n) break;
      if (bits[e] > threshold) {
        selection[greater_rank + min(equal_rank, equal_wanted)] = first + e;
        ++greater_rank;
      } else if (bits[e] == threshold) {
        if (equal_rank < equal_wanted) selection[greater_rank + equal_rank] = first + e;
        ++equal_rank;
      }
    }
    greater_before += tile_total >> 16;
    equal_before += tile_total & 0xffff;
  }
}

}  // namespace

void launch_pooled_topk(const PooledTopkParams& params, int batch, cudaStream_t stream) {
  const size_t head_stats_bytes = sizeof(float2) * static_cast<size_t>(params.heads_per_set);
  const int sets = batch * params.num_sets;
  if (params.mass_chunks > 1) {
    KASCADE_CUDA_CHECK(cudaMemsetAsync(params.digit_histogram, 0, sizeof(int) * kWideBins * sets, stream));
    pooled_mass_kernel<<<dim3(params.mass_chunks, sets), kTopkThreads, head_stats_bytes, stream>>>(params);
    KASCADE_CUDA_CHECK(cudaGetLastError());
  }
  pooled_topk_kernel<<<sets, kTopkThreads, head_stats_bytes, stream>>>(params);
  KASCADE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kascade::cuda
