// prefill_topk.cu — the per-tile top-k of the anchor (SPEC 5 step 3): a radix select over the
// pooled mass of each (tile, selection), independent of storage type and head dim.
//
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
#include "kascade/budget.h"
#include "prefill_common.cuh"
#include "prefill_params.h"

namespace kascade::cuda::prefill {
namespace {

constexpr int kFirstDigitBits = 12;
constexpr int kLaterDigitBits = 10;
static_assert(kFirstDigitBits + 2 * kLaterDigitBits == 32, "the digits cover the 32 bits of a float");
constexpr int kFirstBins = 1 << kFirstDigitBits;
constexpr int kLaterBins = 1 << kLaterDigitBits;
constexpr int kCandidateCapacity = 6144;
constexpr int kItemsPerThread = 4;  // consecutive keys (or candidates) per thread in the ordered passes
constexpr int kKeysPerPass = kTopkThreads * kItemsPerThread;
static_assert((kFirstBins % kTopkThreads) == 0 && (kLaterBins % kTopkThreads) == 0,
              "digit bins split evenly over the threads");
// The ordered gather scans two counts packed in one int (sure keys << 16 | candidates).
static_assert(kKeysPerPass < (1 << 16), "one pass's counts must fit 16 bits each");

// Shared memory (dynamic: over 48 KiB). The first digit's histogram is dead once that digit is
// found, and the later digits use only its first kLaterBins bins, so the candidates' keys,
// gathered after the first digit, overlay the rest of it.
struct TopkShared {
  int histogram_and_keys[kLaterBins + kCandidateCapacity];
  uint32_t candidates[kCandidateCapacity];  // values; in the merge, each chosen key's output slot
  int scratch[kBlockScanScratch];
  int digit, above, digit_count;
  __device__ int* histogram() { return histogram_and_keys; }
  __device__ int* candidate_keys() { return histogram_and_keys + kLaterBins; }
};
static_assert(kLaterBins + kCandidateCapacity >= kFirstBins, "the first digit's histogram fits the overlay");

// The digits fixed so far: keys whose bits under `mask` equal `prefix` may still be the k-th
// largest; `remaining` of them are still to be taken.
struct RadixState {
  uint32_t prefix = 0, mask = 0;
  int remaining = 0;
};

// One radix digit of kBits at `shift` over values load(0 .. count-1): histogram of the values that
// match the state, then the digit d whose bin holds the remaining-th largest (counting from the
// top). Returns how many values match the extended prefix. Every thread calls it; it ends with a
// barrier, so the histogram is free when it returns.
template <int kBits, typename Load>
__device__ int radix_digit(Load load, int count, int shift, RadixState& st, TopkShared& sh) {
  constexpr int kBins = 1 << kBits;
  constexpr int kBinsPerThread = kBins / kTopkThreads;
  int* histogram = sh.histogram();
  for (int i = threadIdx.x; i < kBins; i += kTopkThreads) histogram[i] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < count; i += kTopkThreads) {
    const uint32_t u = load(i);
    if ((u & st.mask) == st.prefix) atomicAdd(&histogram[(u >> shift) & (kBins - 1)], 1);
  }
  __syncthreads();
  // Thread t owns kBinsPerThread bins, thread 0 the highest digits; an exclusive scan in thread
  // order gives the count above each thread's bins, and the one thread whose bins reach the
  // remaining-th value walks them.
  const int top = kBins - 1 - static_cast<int>(threadIdx.x) * kBinsPerThread;
  int local = 0;
#pragma unroll
  for (int j = 0; j < kBinsPerThread; ++j) local += histogram[top - j];
  int total;
  const int above = block_exclusive_sum(local, sh.scratch, total);
  if (above < st.remaining && st.remaining <= above + local) {
    int acc = above, d = top;
    for (int j = 0; j < kBinsPerThread - 1 && acc + histogram[d] < st.remaining; ++j, --d) acc += histogram[d];
    sh.digit = d;
    sh.above = acc;
    sh.digit_count = histogram[d];
  }
  __syncthreads();
  st.prefix |= static_cast<uint32_t>(sh.digit) << shift;
  st.mask |= static_cast<uint32_t>(kBins - 1) << shift;
  st.remaining -= sh.above;
  const int matching = sh.digit_count;
  __syncthreads();  // sh.digit etc. and the histogram are rewritten by the next digit
  return matching;
}

// The selected entries of values value_of(0 .. count-1), in index order: every value above
// `threshold` and the first `ties` equal to it. emit(slot, key) receives key_of(i) of entry i and
// its rank among the selected. Each thread loads the values and keys of kItemsPerThread
// consecutive entries of a pass before the pass's first barrier and emits after it, at a slot <=
// the entry's index, so emit may overwrite the entries being read (in-place compaction). Every
// thread calls it.
template <typename Value, typename Key, typename Emit>
__device__ void emit_selected(Value value_of, Key key_of, int count, uint32_t threshold, int ties, TopkShared& sh,
                              Emit emit) {
  int taken = 0, ties_seen = 0;
  for (int base = 0; base < count; base += kKeysPerPass) {
    const int first = base + static_cast<int>(threadIdx.x) * kItemsPerThread;
    uint32_t u[kItemsPerThread];
    int32_t key[kItemsPerThread];
    int equal_count = 0;
#pragma unroll
    for (int j = 0; j < kItemsPerThread; ++j) {
      u[j] = first + j < count ? value_of(first + j) : 0u;
      key[j] = first + j < count ? key_of(first + j) : -1;
      equal_count += (first + j < count && u[j] == threshold) ? 1 : 0;
    }
    int ties_total;
    int tie_rank = ties_seen + block_exclusive_sum(equal_count, sh.scratch, ties_total);
    bool take[kItemsPerThread];
    int takes = 0;
#pragma unroll
    for (int j = 0; j < kItemsPerThread; ++j) {
      const bool equal = first + j < count && u[j] == threshold;
      take[j] = first + j < count && (u[j] > threshold || (equal && tie_rank < ties));
      tie_rank += equal ? 1 : 0;
      takes += take[j] ? 1 : 0;
    }
    int take_total;
    int slot = taken + block_exclusive_sum(takes, sh.scratch, take_total);
#pragma unroll
    for (int j = 0; j < kItemsPerThread; ++j)
      if (take[j]) emit(slot++, key[j]);
    taken += take_total;
    ties_seen += ties_total;
  }
}

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
  auto from_candidates = [&](int i) { return sh.candidates[i]; };

  RadixState st;
  st.remaining = k;
  constexpr int kSecondShift = kLaterDigitBits, kThirdShift = 0;
  const int matching = radix_digit<kFirstDigitBits>(from_row, n, kSecondShift + kLaterDigitBits, st, sh);
  if (matching > kCandidateCapacity) {
    // Near-equal masses: the last digits and the output read the row.
    radix_digit<kLaterDigitBits>(from_row, n, kSecondShift, st, sh);
    radix_digit<kLaterDigitBits>(from_row, n, kThirdShift, st, sh);
    emit_selected(from_row, [](int i) { return i; }, n, st.prefix, st.remaining, sh,
                  [&](int at, int32_t key) { out[at] = key; });
  } else {
    // Ordered pass: keys above the first digit go to out[0 .. sure) ascending, the keys that share
    // it to the candidate arrays in key order.
    const int sure = k - st.remaining;
    int32_t* keys = sh.candidate_keys();
    int sure_seen = 0, candidates_seen = 0;
    for (int base = 0; base < n; base += kKeysPerPass) {
      const int first = base + static_cast<int>(threadIdx.x) * kItemsPerThread;
      uint32_t u[kItemsPerThread];
      int counts = 0;  // sure << 16 | candidates
#pragma unroll
      for (int j = 0; j < kItemsPerThread; ++j) {
        u[j] = first + j < n ? from_row(first + j) : 0u;
        const uint32_t digit = u[j] & st.mask;
        counts += first + j < n ? (digit > st.prefix ? 1 << 16 : digit == st.prefix ? 1 : 0) : 0;
      }
      int totals;
      const int before = block_exclusive_sum(counts, sh.scratch, totals);
      int sure_at = sure_seen + (before >> 16), candidate_at = candidates_seen + (before & 0xffff);
#pragma unroll
      for (int j = 0; j < kItemsPerThread; ++j) {
        if (first + j >= n) continue;
        const uint32_t digit = u[j] & st.mask;
        if (digit > st.prefix) {
          out[sure_at++] = first + j;
        } else if (digit == st.prefix) {
          sh.candidates[candidate_at] = u[j];
          keys[candidate_at++] = first + j;
        }
      }
      sure_seen += totals >> 16;
      candidates_seen += totals & 0xffff;
    }
    __syncthreads();  // the candidates landed
    radix_digit<kLaterDigitBits>(from_candidates, matching, kSecondShift, st, sh);
    radix_digit<kLaterDigitBits>(from_candidates, matching, kThirdShift, st, sh);
    // The selected candidates' keys, compacted in place to keys[0 .. chosen).
    const int chosen = k - sure;
    emit_selected(from_candidates, [&](int i) { return keys[i]; }, matching, st.prefix, st.remaining, sh,
                  [&](int at, int32_t key) { keys[at] = key; });
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
