// src/cuda/topk/radix_select.cuh — the block-wide radix select shared by the decode and prefill
// top-k kernels (SPEC 4 and 5): the k-th largest of non-negative fp32 values, and the selection
// with the oracle's tie rule.
//
// Non-negative floats order as their bit patterns, so the k-th largest value is fixed digit by
// digit from the top: a RadixState holds the bits fixed so far; digit_histogram counts one digit
// of the values that still match them; pick_digit finds the digit whose bin holds the
// `remaining`-th largest. The digits are 12 + 10 + 10 bits. The first is 12 bits because decode
// builds its histogram while computing the values (pass 1, possibly over several blocks meeting in
// a 4096-bin workspace) and a wider one would not fit shared memory beside 1024 threads' work; the
// other two split the remaining 20 bits evenly, so their 1024-bin histograms fit where prefill
// overlays its candidates on the dead first histogram (decode used 12 + 8 for them before: same
// number of passes, a 4096-bin middle scan instead of 1024).
//
// ordered_partition walks values in index order, one block-wide scan per tile of kThreads *
// kItems values, and hands each value at or above a digit prefix its rank among those above and
// among those equal; emit_selected is the tie rule built on it: every value above the threshold,
// then the first `remaining` equal ones, at their ranks in ascending index order.
//
// Every routine here is called by every thread of the block (they contain barriers).
#pragma once

#include <cstdint>

#include "../common/device_math.cuh"

namespace kascade::cuda {

constexpr int kRadixFirstBits = 12;
constexpr int kRadixLaterBits = 10;
static_assert(kRadixFirstBits + 2 * kRadixLaterBits == 32, "the digits cover the 32 bits of a float");
constexpr int kRadixFirstBins = 1 << kRadixFirstBits;
constexpr int kRadixLaterBins = 1 << kRadixLaterBits;
constexpr int kRadixSecondShift = kRadixLaterBits;
constexpr int kRadixFirstShift = kRadixSecondShift + kRadixLaterBits;
constexpr int kRadixThirdShift = 0;

// The digits fixed so far: values whose bits under `mask` equal `prefix` may still be the k-th
// largest; `remaining` of them are still to be taken. Once all digits are fixed, prefix is the
// k-th largest value and remaining the number of values equal to it that are selected.
struct RadixState {
  uint32_t prefix = 0;
  uint32_t mask = 0;
  int remaining = 0;
};

// Shared memory of a select beside its histogram: the scan's scratch and the picked digit, which
// one thread finds and all read.
struct RadixScratch {
  int scan[kBlockScanScratch];
  int digit, above, digit_count;
};

// The first digit of a value (its bin in the first histogram).
__device__ __forceinline__ int radix_first_digit(uint32_t bits) { return static_cast<int>(bits >> kRadixFirstShift); }

template <int kThreads>
__device__ __forceinline__ void clear_bins(int* histogram, int bins) {
  for (int i = threadIdx.x; i < bins; i += kThreads) histogram[i] = 0;
}

// Histogram of the kBits digit at `shift` of the values load(0 .. count-1) that match `state`.
// Ends with a barrier: the histogram is complete on return.
template <int kThreads, int kBits, typename Load>
__device__ void digit_histogram(Load load, int count, int shift, const RadixState& state, int* histogram) {
  constexpr int kBins = 1 << kBits;
  clear_bins<kThreads>(histogram, kBins);
  __syncthreads();
  for (int i = threadIdx.x; i < count; i += kThreads) {
    const uint32_t bits = load(i);
    if ((bits & state.mask) == state.prefix) atomicAdd(&histogram[(bits >> shift) & (kBins - 1)], 1);
  }
  __syncthreads();
}

// Fixes the kBits digit at `shift` of the remaining-th largest value from the histogram of that
// digit and updates `state` in every thread. Returns how many values match the extended prefix.
// Ends with a barrier, so the histogram and scratch are free on return.
template <int kThreads, int kBits>
__device__ int pick_digit(const int* histogram, int shift, RadixState& state, RadixScratch& scratch) {
  constexpr int kBins = 1 << kBits;
  static_assert(kBins % kThreads == 0, "digit bins split evenly over the threads");
  constexpr int kBinsPerThread = kBins / kThreads;
  // Thread t owns kBinsPerThread bins, thread 0 the highest digits; an exclusive scan in thread
  // order gives the count above each thread's bins, and the one thread whose bins reach the
  // remaining-th value walks them.
  const int top = kBins - 1 - static_cast<int>(threadIdx.x) * kBinsPerThread;
  int owned = 0;
#pragma unroll
  for (int j = 0; j < kBinsPerThread; ++j) owned += histogram[top - j];
  int total;
  const int above = block_exclusive_sum(owned, scratch.scan, total);
  if (above < state.remaining && state.remaining <= above + owned) {
    int count_above = above, digit = top;
    for (int j = 0; j < kBinsPerThread - 1 && count_above + histogram[digit] < state.remaining; ++j, --digit)
      count_above += histogram[digit];
    scratch.digit = digit;
    scratch.above = count_above;
    scratch.digit_count = histogram[digit];
  }
  __syncthreads();
  state.prefix |= static_cast<uint32_t>(scratch.digit) << shift;
  state.mask |= static_cast<uint32_t>(kBins - 1) << shift;
  state.remaining -= scratch.above;
  const int matching = scratch.digit_count;
  __syncthreads();  // scratch is rewritten by the next digit
  return matching;
}

// digit_histogram then pick_digit.
template <int kThreads, int kBits, typename Load>
__device__ int radix_digit(Load load, int count, int shift, RadixState& state, int* histogram, RadixScratch& scratch) {
  digit_histogram<kThreads, kBits>(load, count, shift, state, histogram);
  return pick_digit<kThreads, kBits>(histogram, shift, state, scratch);
}

// Walks entries 0 .. count-1 in index order: thread t of a tile takes kItems consecutive ones,
// load_items(first, bits, keys) fills the bits and keys of entries first .. first+kItems-1 (those
// below count; the rest are ignored). For each entry whose bits under `mask` are at or above
// `pivot`, visit(is_above, above_rank, equal_rank, bits, key) gets the number of earlier entries
// above and equal to the pivot. One block scan per tile (both counts packed in one int); every
// entry of a tile is loaded before its scan's barriers and visited after them, so a visit may
// overwrite any entry at or below its own index (in-place compaction).
template <int kThreads, int kItems, typename LoadItems, typename Visit>
__device__ __forceinline__ void ordered_partition(LoadItems load_items, int count, uint32_t mask, uint32_t pivot,
                                                  int* scan_scratch, Visit visit) {
  constexpr int kTile = kThreads * kItems;
  static_assert(kTile < (1 << 16), "a tile's counts must fit 16 bits each");
  int above_before = 0, equal_before = 0;  // over earlier tiles
  for (int base = 0; base < count; base += kTile) {
    const int first = base + static_cast<int>(threadIdx.x) * kItems;
    uint32_t bits[kItems];
    int32_t keys[kItems];
    load_items(first, bits, keys);
    int counts = 0;  // above << 16 | equal
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const uint32_t digits = bits[j] & mask;
      counts += first + j < count ? (digits > pivot ? 1 << 16 : digits == pivot ? 1 : 0) : 0;
    }
    int tile_total;
    const int before = block_exclusive_sum(counts, scan_scratch, tile_total);
    int above_rank = above_before + (before >> 16), equal_rank = equal_before + (before & 0xffff);
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      if (first + j >= count) break;
      const uint32_t digits = bits[j] & mask;
      if (digits > pivot) {
        visit(true, above_rank++, equal_rank, bits[j], keys[j]);
      } else if (digits == pivot) {
        visit(false, above_rank, equal_rank++, bits[j], keys[j]);
      }
    }
    above_before += tile_total >> 16;
    equal_before += tile_total & 0xffff;
  }
}

// The selection with the oracle's tie rule, once every digit is fixed (state.prefix is the k-th
// largest value): every entry above it and the first state.remaining entries equal to it, in
// index order; emit(slot, key) gets the entry's key and its rank among the selected, a slot at or
// below the entry's index (so emit may compact the entries in place).
template <int kThreads, int kItems, typename LoadItems, typename Emit>
__device__ __forceinline__ void emit_selected(LoadItems load_items, int count, const RadixState& state,
                                              int* scan_scratch, Emit emit) {
  const int ties = state.remaining;
  ordered_partition<kThreads, kItems>(load_items, count, ~0u, state.prefix, scan_scratch,
                                      [&](bool is_above, int above_rank, int equal_rank, uint32_t, int32_t key) {
                                        if (is_above) emit(above_rank + min(equal_rank, ties), key);
                                        else if (equal_rank < ties) emit(above_rank + equal_rank, key);
                                      });
}

}  // namespace kascade::cuda
