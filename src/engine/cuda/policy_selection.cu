// The Streaming and Quest selection kernels (policy_selection.h).
#include "policy_selection.h"

#include <cuda_bf16.h>

#include <cfloat>

#include "common/cuda_check.h"
#include "kascade/budget.h"
#include "kascade/error.h"

namespace kascade::engine::cuda::policy_select {

namespace {

using bf16 = __nv_bfloat16;

constexpr int kThreads = 256;

__device__ int64_t row_budget(const Args& a, int64_t n) {
  return budget_k(n, a.sparsity.rho, a.sparsity.k_min, a.sparsity.k_multiple);
}

// One block per (row, set): the row is a pure function of n and k.
__global__ void streaming_kernel(Args a) {
  const int b = blockIdx.x, set = blockIdx.y;
  const int64_t n = a.kv.seq_lens[b];
  const int64_t k = row_budget(a, n);
  const int64_t sinks = k < kSinkTokens ? k : kSinkTokens;
  int32_t* row = a.selection.indices + (static_cast<int64_t>(b) * a.selection.num_sets + set) * a.selection.k_max;
  for (int64_t j = threadIdx.x; j < a.selection.k_max; j += blockDim.x) {
    int32_t key = -1;
    if (j < sinks) {
      key = static_cast<int32_t>(j);
    } else if (j < k) {
      key = static_cast<int32_t>(n - (k - sinks) + (j - sinks));
    }
    row[j] = key;
  }
  if (threadIdx.x == 0) a.selection.counts[b * a.selection.num_sets + set] = static_cast<int32_t>(k);
}

__device__ const bf16* key_row(const PagedKV& kv, int b, int64_t pos, int g) {
  const int64_t page = kv.page_indices[kv.page_indptr[b] + pos / kv.page_size];
  return static_cast<const bf16*>(kv.k) + page * kv.page_stride + (pos % kv.page_size) * kv.token_stride +
         g * kv.head_stride;
}

// One block per (row, kv head). Shared memory: the pages' bounds, then per page its start rank
// (keys of higher-ranked pages) and its output offset.
__global__ void quest_kernel(Args a) {
  extern __shared__ float smem[];
  const int b = blockIdx.x, g = blockIdx.y;
  const int64_t n = a.kv.seq_lens[b];
  const int pages = static_cast<int>((n + kQuestPage - 1) / kQuestPage);
  const int64_t k = row_budget(a, n);
  const int d = a.kv.head_dim, group = a.num_q_heads / a.kv.num_kv_heads;
  float* bound = smem;
  int* start = reinterpret_cast<int*>(bound + pages);
  int* offset = start + pages;
  const bf16* q = static_cast<const bf16*>(a.q) + static_cast<int64_t>(b) * a.num_q_heads * d;
  // Bounds: one warp per page, lanes over dimensions; per-dimension min/max over the page's keys.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int p = warp; p < pages; p += warps) {
    const int64_t first = static_cast<int64_t>(p) * kQuestPage;
    const int64_t last = first + kQuestPage < n ? first + kQuestPage : n;
    float head_bound[8];  // group <= 8 (checked on the host)
    for (int h = 0; h < group; ++h) head_bound[h] = 0.f;
    for (int c = lane; c < d; c += 32) {
      float lo = FLT_MAX, hi = -FLT_MAX;
      for (int64_t i = first; i < last; ++i) {
        const float x = __bfloat162float(key_row(a.kv, b, i, g)[c]);
        lo = fminf(lo, x);
        hi = fmaxf(hi, x);
      }
      for (int h = 0; h < group; ++h) {
        const float qc = __bfloat162float(q[(g * group + h) * d + c]);
        head_bound[h] += fmaxf(qc * lo, qc * hi);
      }
    }
    float best = -FLT_MAX;
    for (int h = 0; h < group; ++h) {
      float v = head_bound[h];
      for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
      best = fmaxf(best, v);
    }
    if (lane == 0) bound[p] = best;
  }
  __syncthreads();
  // Rank: the keys of every page that precedes p in (bound desc, page asc) order.
  for (int p = threadIdx.x; p < pages; p += blockDim.x) {
    int before = 0;
    const float bp = bound[p];
    for (int o = 0; o < pages; ++o) {
      const float bo = bound[o];
      if (bo > bp || (bo == bp && o < p)) {
        const int64_t size = (static_cast<int64_t>(o) + 1) * kQuestPage <= n ? kQuestPage : n - o * kQuestPage;
        before += static_cast<int>(size);
      }
    }
    start[p] = before;
  }
  __syncthreads();
  // Keys taken from each page (its first ones) and where they go, in page (= position) order.
  if (threadIdx.x == 0) {
    int out = 0;
    for (int p = 0; p < pages; ++p) {
      offset[p] = out;
      const int size = (p + 1) * kQuestPage <= n ? kQuestPage : static_cast<int>(n - p * kQuestPage);
      const int64_t left = k - start[p];
      out += left <= 0 ? 0 : (left < size ? static_cast<int>(left) : size);
    }
    a.selection.counts[b * a.selection.num_sets + g] = out;
  }
  __syncthreads();
  int32_t* row = a.selection.indices + (static_cast<int64_t>(b) * a.selection.num_sets + g) * a.selection.k_max;
  for (int64_t j = threadIdx.x; j < a.selection.k_max; j += blockDim.x) row[j] = -1;
  __syncthreads();
  for (int p = threadIdx.x; p < pages; p += blockDim.x) {
    const int size = (p + 1) * kQuestPage <= n ? kQuestPage : static_cast<int>(n - p * kQuestPage);
    const int64_t left = k - start[p];
    const int take = left <= 0 ? 0 : (left < size ? static_cast<int>(left) : size);
    for (int i = 0; i < take; ++i) row[offset[p] + i] = p * kQuestPage + i;
  }
}

}  // namespace

void streaming(const Args& a, cudaStream_t stream) {
  if (a.kv.batch == 0) return;
  const dim3 grid(static_cast<unsigned>(a.kv.batch), static_cast<unsigned>(a.selection.num_sets));
  streaming_kernel<<<grid, kThreads, 0, stream>>>(a);
  KASCADE_CUDA_CHECK(cudaGetLastError());
}

void quest(const Args& a, cudaStream_t stream) {
  if (a.kv.batch == 0) return;
  const int group = a.num_q_heads / a.kv.num_kv_heads;
  KASCADE_CHECK(group >= 1 && group <= 8, "quest selection: group size " << group << " is outside 1..8");
  KASCADE_CHECK(a.selection.num_sets == a.kv.num_kv_heads, "quest selection: needs one set per kv head (group pooling)");
  // Shared memory holds the page table of the longest row the shape allows.
  const int64_t pages = (a.max_seq_len + kQuestPage - 1) / kQuestPage;
  const size_t smem = static_cast<size_t>(pages) * (sizeof(float) + 2 * sizeof(int));
  KASCADE_CHECK(smem <= 200 * 1024, "quest selection: " << a.max_seq_len << " keys exceed the shared-memory page table");
  if (smem > 48 * 1024) {
    KASCADE_CUDA_CHECK(cudaFuncSetAttribute(quest_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(smem)));
  }
  const dim3 grid(static_cast<unsigned>(a.kv.batch), static_cast<unsigned>(a.kv.num_kv_heads));
  quest_kernel<<<grid, kThreads, smem, stream>>>(a);
  KASCADE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kascade::engine::cuda::policy_select
