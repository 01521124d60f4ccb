// prefill_topk.cu — the per-tile top-k of the anchor (SPEC 5 step 3): a radix select over the
// pooled mass of each (tile, selection), independent of storage type and head dim.
#include "../common/cuda_check.h"
#include "kascade/budget.h"
#include "prefill_params.h"

namespace kascade::cuda::prefill {
namespace {

// ---- top-k ---------------------------------------------------------------------------------
// One CTA per (tile tile0 + x, sequence b, selection s): grid x = tile in chunk, y = b * S + s.
__global__ void __launch_bounds__(kTopkThreads) topk_kernel(const __grid_constant__ TopkParams p) {
  __shared__ int histogram[256];
  __shared__ int scratch[kBlockScanScratch];
  __shared__ int digit_shared, above_shared;

  const int b = blockIdx.y / p.num_selections, sel = blockIdx.y % p.num_selections;
  const int tau = p.tile0 + blockIdx.x;
  if (tau >= p.max_tiles) return;
  const SeqGeometry g = seq_geometry(p.q_indptr, p.seq_lens, b);
  const int64_t slot = (int64_t(b) * p.num_selections + sel) * p.max_tiles + tau;
  int32_t* out = p.sel_indices + slot * p.k_max;
  const int tiles = static_cast<int>(num_tiles(g.p0, g.p1, p.tile));
  const int n = tau < tiles ? static_cast<int>(tile_begin(g.p0, tau, p.tile)) : 0;
  const int k = tau < tiles ? static_cast<int>(tile_budget(p.rolling, n, g.p1, p.rho, p.k_min, p.k_multiple)) : 0;

  if (k >= n) {  // the whole prefix (also empty tiles)
    for (int i = threadIdx.x; i < p.k_max; i += kTopkThreads) out[i] = i < n ? i : -1;
    if (threadIdx.x == 0) p.sel_counts[slot] = n;
    return;
  }
  const uint32_t* bits =
      reinterpret_cast<const uint32_t*>(p.mass + ((int64_t(b) * p.chunk_tiles + blockIdx.x) * p.num_selections + sel) * p.mass_stride);

  // Radix select, 8 bits at a time from the top: non-negative floats order as their bit patterns.
  uint32_t prefix = 0, prefix_mask = 0;
  int remaining = k;  // how many of the keys matching `prefix` are still to be taken
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += kTopkThreads) histogram[i] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += kTopkThreads) {
      const uint32_t u = bits[i];
      if ((u & prefix_mask) == prefix) atomicAdd(&histogram[(u >> shift) & 255u], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int above = 0, digit = 255;
      for (; digit > 0; --digit) {
        if (above + histogram[digit] >= remaining) break;
        above += histogram[digit];
      }
      digit_shared = digit;
      above_shared = above;
    }
    __syncthreads();
    prefix |= static_cast<uint32_t>(digit_shared) << shift;
    prefix_mask |= 255u << shift;
    remaining -= above_shared;
    __syncthreads();
  }
  // `prefix` is the k-th largest value; take every larger key and the first `remaining` equal ones.
  const uint32_t threshold = prefix;
  int taken = 0, ties_seen = 0;
  for (int base = 0; base < n; base += kTopkThreads) {
    const int i = base + threadIdx.x;
    const uint32_t u = i < n ? bits[i] : 0u;
    const bool equal = i < n && u == threshold;
    int ties_total;
    const int tie_rank = ties_seen + block_exclusive_sum(equal ? 1 : 0, scratch, ties_total);
    const bool take = i < n && (u > threshold || (equal && tie_rank < remaining));
    int take_total;
    const int at = taken + block_exclusive_sum(take ? 1 : 0, scratch, take_total);
    if (take) out[at] = i;
    taken += take_total;
    ties_seen += ties_total;
  }
  for (int i = k + threadIdx.x; i < p.k_max; i += kTopkThreads) out[i] = -1;
  if (threadIdx.x == 0) p.sel_counts[slot] = k;
}


}  // namespace

void launch_topk(const TopkParams& p, dim3 grid, cudaStream_t stream) {
  topk_kernel<<<grid, kTopkThreads, 0, stream>>>(p);
  KASCADE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kascade::cuda::prefill
