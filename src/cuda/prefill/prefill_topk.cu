// prefill_topk.cu — the per-tile top-k of the anchor (SPEC 5 step 3): a radix select over the
// pooled mass of each (tile, selection), independent of storage type and head dim.
//
// Non-negative floats order as their bit patterns, so the k-th largest mass is found digit by
// digit from the top: a 12-bit digit (bits 31..20: the exponent and 3 mantissa bits) over the
// whole row, then two 10-bit digits. The values that share the first digit with the k-th largest
// are usually few, so they are gathered into shared memory and the last two digits are resolved
// there; only when more than kCandidateCapacity share it (a row of near-equal masses) do the last
// digits read the row again. A final pass writes the selected keys in ascending order: every key
// above the threshold and the first `remaining` keys equal to it. So a row is read three times
// (histogram, gather, output) where an 8-bit radix over the row read it five times.
#include "../common/cuda_check.h"
#include "kascade/budget.h"
#include "prefill_params.h"

namespace kascade::cuda::prefill {
namespace {

constexpr int kFirstDigitBits = 12;
constexpr int kLaterDigitBits = 10;
static_assert(kFirstDigitBits + 2 * kLaterDigitBits == 32, "the digits cover the 32 bits of a float");
constexpr int kMaxBins = 1 << kFirstDigitBits;
constexpr int kCandidateCapacity = 6144;
constexpr int kItemsPerThread = 4;  // consecutive keys per thread in the output pass
static_assert((kMaxBins % kTopkThreads) == 0 && ((1 << kLaterDigitBits) % kTopkThreads) == 0,
              "digit bins split evenly over the threads");

struct TopkShared {
  int histogram[kMaxBins];
  uint32_t candidates[kCandidateCapacity];
  int scratch[kBlockScanScratch];
  int digit, above, digit_count, candidate_count;
};

// The digits fixed so far: keys whose bits under `mask` equal `prefix` may still be the k-th
// largest; `remaining` of them are still to be taken.
struct RadixState {
  uint32_t prefix = 0, mask = 0;
  int remaining = 0;
};

// One radix digit of kBits at `shift` over values load(0 .. count-1): histogram of the values that
// match the state, then the digit d whose bin holds the remaining-th largest (counting from the
// top). Returns how many values match the extended prefix. Every thread calls it.
template <int kBits, typename Load>
__device__ int radix_digit(Load load, int count, int shift, RadixState& st, TopkShared& sh) {
  constexpr int kBins = 1 << kBits;
  constexpr int kBinsPerThread = kBins / kTopkThreads;
  for (int i = threadIdx.x; i < kBins; i += kTopkThreads) sh.histogram[i] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < count; i += kTopkThreads) {
    const uint32_t u = load(i);
    if ((u & st.mask) == st.prefix) atomicAdd(&sh.histogram[(u >> shift) & (kBins - 1)], 1);
  }
  __syncthreads();
  // Thread t owns kBinsPerThread bins, thread 0 the highest digits; an exclusive scan in thread
  // order gives the count above each thread's bins, and the one thread whose bins reach the
  // remaining-th value walks them.
  const int top = kBins - 1 - static_cast<int>(threadIdx.x) * kBinsPerThread;
  int local = 0;
#pragma unroll
  for (int j = 0; j < kBinsPerThread; ++j) local += sh.histogram[top - j];
  int total;
  const int above = block_exclusive_sum(local, sh.scratch, total);
  if (above < st.remaining && st.remaining <= above + local) {
    int acc = above, d = top;
    for (int j = 0; j < kBinsPerThread - 1 && acc + sh.histogram[d] < st.remaining; ++j, --d) acc += sh.histogram[d];
    sh.digit = d;
    sh.above = acc;
    sh.digit_count = sh.histogram[d];
  }
  __syncthreads();
  st.prefix |= static_cast<uint32_t>(sh.digit) << shift;
  st.mask |= static_cast<uint32_t>(kBins - 1) << shift;
  st.remaining -= sh.above;
  const int matching = sh.digit_count;
  __syncthreads();  // sh.digit etc. and the histogram are rewritten by the next digit
  return matching;
}

// One CTA per (tile tile0 + x, sequence b, selection s): grid x = tile in chunk, y = b * S + s.
__global__ void __launch_bounds__(kTopkThreads) topk_kernel(const __grid_constant__ TopkParams p) {
  __shared__ TopkShared sh;

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
  if (matching <= kCandidateCapacity) {
    // Gather the values that share the first digit (warp-aggregated slots; their order is not needed).
    if (threadIdx.x == 0) sh.candidate_count = 0;
    __syncthreads();
    const int lane = threadIdx.x % 32;
    for (int base = 0; base < n; base += kTopkThreads) {
      const int i = base + threadIdx.x;
      const uint32_t u = i < n ? from_row(i) : 0u;
      const bool match = i < n && (u & st.mask) == st.prefix;
      const unsigned ballot = __ballot_sync(0xffffffffu, match);
      int first = 0;
      if (lane == 0 && ballot != 0) first = atomicAdd(&sh.candidate_count, __popc(ballot));
      first = __shfl_sync(0xffffffffu, first, 0);
      if (match) sh.candidates[first + __popc(ballot & ((1u << lane) - 1u))] = u;
    }
    __syncthreads();
    radix_digit<kLaterDigitBits>(from_candidates, matching, kSecondShift, st, sh);
    radix_digit<kLaterDigitBits>(from_candidates, matching, kThirdShift, st, sh);
  } else {
    radix_digit<kLaterDigitBits>(from_row, n, kSecondShift, st, sh);
    radix_digit<kLaterDigitBits>(from_row, n, kThirdShift, st, sh);
  }

  // `st.prefix` is the k-th largest value; take every larger key and the first `remaining` equal
  // ones, in ascending key order (kItemsPerThread consecutive keys per thread).
  const uint32_t threshold = st.prefix;
  const int remaining = st.remaining;
  constexpr int kKeysPerPass = kTopkThreads * kItemsPerThread;
  int taken = 0, ties_seen = 0;
  for (int base = 0; base < n; base += kKeysPerPass) {
    const int first = base + static_cast<int>(threadIdx.x) * kItemsPerThread;
    uint32_t u[kItemsPerThread];
    int ties = 0;
#pragma unroll
    for (int j = 0; j < kItemsPerThread; ++j) {
      u[j] = first + j < n ? from_row(first + j) : 0u;
      ties += (first + j < n && u[j] == threshold) ? 1 : 0;
    }
    int ties_total;
    int tie_rank = ties_seen + block_exclusive_sum(ties, sh.scratch, ties_total);
    bool take[kItemsPerThread];
    int takes = 0;
#pragma unroll
    for (int j = 0; j < kItemsPerThread; ++j) {
      const bool equal = first + j < n && u[j] == threshold;
      take[j] = first + j < n && (u[j] > threshold || (equal && tie_rank < remaining));
      tie_rank += equal ? 1 : 0;
      takes += take[j] ? 1 : 0;
    }
    int take_total;
    int at = taken + block_exclusive_sum(takes, sh.scratch, take_total);
#pragma unroll
    for (int j = 0; j < kItemsPerThread; ++j)
      if (take[j]) out[at++] = first + j;
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
