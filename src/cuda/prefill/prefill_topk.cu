// prefill_topk.cu — the per-tile top-k of the anchor (SPEC 5 step 3): a radix select over the
// pooled mass of each (tile, selection), independent of storage type and head dim.
//
// The select and its tie rule are radix_select.cuh's (shared with decode's pooled_topk.cu).
// Non-negative floats order as their bit patterns, so the k-th largest mass is found digit by
// digit from the top: a 12-bit digit (bits 31..20: the exponent and 3 mantissa bits) over the
// whole row, then two 10-bit digits. After the first digit every key is either above the k-th
// largest's digit (selected for sure), below it (never selected), or shares it (a candidate).
// Candidates are usually few, so one more pass over the row writes the sure keys to the output in
// ascending order and gathers the candidates (value and key, in key order) into shared memory;
// the last two digits are resolved there, the selected candidates compacted, and the two
// ascending lists merged in place in the output row. A row is thus read twice (histogram;
// output and gather). Only when more than kCandidateCapacity keys share the first digit (a row of
// near-equal masses) do the last two digits and the output read the row again (four reads).
//
// Top-k phase of kascade-bench prefill (Llama-3.1-8B shape, rho 0.1, H200, one run), ms:
//                                                              32k      128k
//   histogram, gather, output pass (three reads of a row) .... 0.796    14.47
//   histogram, sure keys + gather in one pass, merge (this) .. 0.698    12.27
#include "../common/cuda_check.h"
#include "../topk/radix_select.cuh"
#include "kascade/budget.h"
#include "prefill_common.cuh"
#include "prefill_params.h"

namespace kascade::cuda::prefill {
namespace {

constexpr int kCandidateCapacity = 6144;
constexpr int kItemsPerThread = 4;  // consecutive keys (or candidates) per thread in the ordered passes

// Shared memory (dynamic: over 48 KiB). The first digit's histogram is dead once that digit is
// found, and the later digits use only its first kRadixLaterBins bins, so the candidates' keys,
// gathered after the first digit, overlay the rest of it.
struct TopkShared {
  int histogram_and_keys[kRadixLaterBins + kCandidateCapacity];
  uint32_t candidates[kCandidateCapacity];  // values; in the merge, each chosen key's output slot
  RadixScratch scratch;
  __device__ int* histogram() { return histogram_and_keys; }
  __device__ int* candidate_keys() { return histogram_and_keys + kRadixLaterBins; }
};
static_assert(kRadixLaterBins + kCandidateCapacity >= kRadixFirstBins, "the first digit's histogram fits the overlay");

// Entries of the ascending list list[0 .. count) below `key`.
template <typename List>
__device__ __forceinline__ int count_below(const List& list, int count, int32_t key) {
  int lo = 0, hi = count;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (list[mid] < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// One CTA per (tile tile0 + x, sequence b, selection s): grid x = tile in chunk, y = b * S + s.
__global__ void __launch_bounds__(kTopkThreads) topk_kernel(const __grid_constant__ TopkParams p) {
  extern __shared__ __align__(16) unsigned char topk_smem[];
  TopkShared& sh = *reinterpret_cast<TopkShared*>(topk_smem);

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
  if (k <= 0) {  // nothing to select (k_min = 0 and a small rho): the radix needs k >= 1
    for (int i = threadIdx.x; i < p.k_max; i += kTopkThreads) out[i] = -1;
    if (threadIdx.x == 0) p.sel_counts[slot] = 0;
    return;
  }
  const uint32_t* bits =
      reinterpret_cast<const uint32_t*>(p.mass + ((int64_t(b) * p.chunk_tiles + blockIdx.x) * p.num_selections + sel) * p.mass_stride);
  auto from_row = [&](int i) { return __ldg(bits + i); };
  auto items_from_row = [&](int first, uint32_t (&u)[kItemsPerThread], int32_t (&key)[kItemsPerThread]) {
#pragma unroll
    for (int j = 0; j < kItemsPerThread; ++j) {
      u[j] = first + j < n ? from_row(first + j) : 0u;
      key[j] = first + j;
    }
  };
  auto from_candidates = [&](int i) { return sh.candidates[i]; };
  int* histogram = sh.histogram();

  RadixState st;
  st.remaining = k;
  const int matching =
      radix_digit<kTopkThreads, kRadixFirstBits>(from_row, n, kRadixFirstShift, st, histogram, sh.scratch);
  if (matching > kCandidateCapacity) {
    // Near-equal masses: the last digits and the output read the row.
    radix_digit<kTopkThreads, kRadixLaterBits>(from_row, n, kRadixSecondShift, st, histogram, sh.scratch);
    radix_digit<kTopkThreads, kRadixLaterBits>(from_row, n, kRadixThirdShift, st, histogram, sh.scratch);
    emit_selected<kTopkThreads, kItemsPerThread>(items_from_row, n, st, sh.scratch.scan,
                                                 [&](int at, int32_t key) { out[at] = key; });
  } else {
    // Ordered pass: keys above the first digit go to out[0 .. sure) ascending, the keys that share
    // it to the candidate arrays in key order.
    const int sure = k - st.remaining;
    int32_t* keys = sh.candidate_keys();
    ordered_partition<kTopkThreads, kItemsPerThread>(
        items_from_row, n, st.mask, st.prefix, sh.scratch.scan,
        [&](bool is_above, int sure_rank, int candidate_rank, uint32_t u, int32_t key) {
          if (is_above) {
            out[sure_rank] = key;
          } else {
            sh.candidates[candidate_rank] = u;
            keys[candidate_rank] = key;
          }
        });
    __syncthreads();  // the candidates landed
    radix_digit<kTopkThreads, kRadixLaterBits>(from_candidates, matching, kRadixSecondShift, st, histogram, sh.scratch);
    radix_digit<kTopkThreads, kRadixLaterBits>(from_candidates, matching, kRadixThirdShift, st, histogram, sh.scratch);
    // The selected candidates' keys, compacted in place to keys[0 .. chosen).
    const int chosen = k - sure;
    emit_selected<kTopkThreads, kItemsPerThread>(
        [&](int first, uint32_t (&u)[kItemsPerThread], int32_t (&key)[kItemsPerThread]) {
#pragma unroll
          for (int j = 0; j < kItemsPerThread; ++j) {
            u[j] = first + j < matching ? sh.candidates[first + j] : 0u;
            key[j] = first + j < matching ? keys[first + j] : -1;
          }
        },
        matching, st, sh.scratch.scan, [&](int at, int32_t key) { keys[at] = key; });
    __syncthreads();
    // Merge: each chosen key's output slot is its rank plus the sure keys below it (looked up
    // before any sure key moves); each sure key moves up by the chosen keys below it, in chunks
    // from the top so that no slot is overwritten before it is read.
    for (int i = threadIdx.x; i < chosen; i += kTopkThreads)
      sh.candidates[i] = static_cast<uint32_t>(i + count_below(out, sure, keys[i]));
    __syncthreads();
    for (int top = sure; top > 0; top -= kTopkThreads) {
      const int i = top - kTopkThreads + static_cast<int>(threadIdx.x);
      const int32_t key = i >= 0 ? out[i] : 0;
      const int to = i >= 0 ? i + count_below(keys, chosen, key) : 0;
      __syncthreads();  // this chunk is read before any of it moves
      if (i >= 0) out[to] = key;
      __syncthreads();
    }
    for (int i = threadIdx.x; i < chosen; i += kTopkThreads) out[sh.candidates[i]] = keys[i];
  }
  for (int i = k + threadIdx.x; i < p.k_max; i += kTopkThreads) out[i] = -1;
  if (threadIdx.x == 0) p.sel_counts[slot] = k;
}

}  // namespace

void launch_topk(const TopkParams& p, dim3 grid, cudaStream_t stream) {
  launch_with_smem<topk_kernel, sizeof(TopkShared), kTopkThreads>(p, grid, stream);
}

}  // namespace kascade::cuda::prefill
