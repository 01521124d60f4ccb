// Radix select (see top_k.h). Each value maps to a 32-bit key that orders like the float, and
// each index to a rank ((key << 32) | ~index) that orders like SPEC's rule, ties included:
//   1. per chunk, a histogram of the keys' top 11 bits; summed, it names the boundary bin
//      that holds the k-th largest key and how many (r) of its values are taken;
//   2. the boundary bin's ranks are gathered (chunk by chunk, in index order) and the r-th
//      largest of them, R, is found by nth_element (a few hundred values at 8k keys; every
//      value when all are equal: still linear);
//   3. index i is selected iff rank(i) >= R: per chunk a count, then the indices written at
//      the chunk's offset, so the output comes out ascending.
// Steps 1 and 3 are threaded over chunks; the result is the same for any thread count.
#include "top_k.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <numeric>

#include "../cpu_kernels.h"
#include "kascade/error.h"

namespace kascade::engine::cpu {

namespace {

constexpr int kBinBits = 11;
constexpr int kBins = 1 << kBinBits;
constexpr int kBinShift = 32 - kBinBits;

// Unsigned key in the order of the floats (finite values; -0 is made +0 first).
inline uint32_t order_key(float x) {
  x += 0.0f;
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Larger rank: larger value, or the same value at a lower index.
inline uint64_t rank_of(const float* values, int i) {
  return (static_cast<uint64_t>(order_key(values[i])) << 32) | static_cast<uint32_t>(~static_cast<uint32_t>(i));
}

void for_each_chunk(ThreadPool* pool, int chunks, const std::function<void(int)>& fn) {
  if (pool && chunks > 1) {
    pool->parallel_for(chunks, fn);
  } else {
    for (int c = 0; c < chunks; ++c) fn(c);
  }
}

}  // namespace

void select_top_k(ThreadPool* pool, const float* values, int n, int k, TopKScratch& scratch, int32_t* out) {
  if (k <= 0 || n <= 0) return;
  if (k >= n) {
    std::iota(out, out + n, 0);
    return;
  }
  const int chunks = (n + kTopKChunk - 1) / kTopKChunk;
  auto chunk_begin = [&](int c) { return c * kTopKChunk; };
  auto chunk_end = [&](int c) { return std::min(n, (c + 1) * kTopKChunk); };

  scratch.histograms.assign(static_cast<size_t>(chunks) * kBins, 0);
  for_each_chunk(pool, chunks, [&](int c) {
    uint32_t* hist = scratch.histograms.data() + static_cast<size_t>(c) * kBins;
    for (int i = chunk_begin(c); i < chunk_end(c); ++i) ++hist[order_key(values[i]) >> kBinShift];
  });

  // The boundary bin, scanning from the largest keys down.
  int boundary = kBins - 1;
  int64_t above = 0, in_boundary = 0;
  for (; boundary >= 0; --boundary) {
    in_boundary = 0;
    for (int c = 0; c < chunks; ++c) in_boundary += scratch.histograms[static_cast<size_t>(c) * kBins + boundary];
    if (above + in_boundary >= k) break;
    above += in_boundary;
  }
  const int64_t taken = k - above;  // 1 .. in_boundary

  // The boundary bin's ranks, each chunk's at its offset.
  scratch.counts.resize(static_cast<size_t>(chunks) + 1);
  scratch.counts[0] = 0;
  for (int c = 0; c < chunks; ++c) {
    scratch.counts[c + 1] = scratch.counts[c] +
                            static_cast<int32_t>(scratch.histograms[static_cast<size_t>(c) * kBins + boundary]);
  }
  scratch.candidates.resize(static_cast<size_t>(in_boundary));
  for_each_chunk(pool, chunks, [&](int c) {
    uint64_t* dst = scratch.candidates.data() + scratch.counts[c];
    for (int i = chunk_begin(c); i < chunk_end(c); ++i) {
      if (static_cast<int>(order_key(values[i]) >> kBinShift) == boundary) *dst++ = rank_of(values, i);
    }
  });
  auto& cand = scratch.candidates;
  std::nth_element(cand.begin(), cand.begin() + (taken - 1), cand.end(), std::greater<uint64_t>());
  const uint64_t threshold = cand[static_cast<size_t>(taken - 1)];

  // Selected: rank >= threshold; counted per chunk, then written ascending.
  for_each_chunk(pool, chunks, [&](int c) {
    int32_t count = 0;
    for (int i = chunk_begin(c); i < chunk_end(c); ++i) count += rank_of(values, i) >= threshold;
    scratch.counts[c + 1] = count;
  });
  scratch.counts[0] = 0;
  for (int c = 0; c < chunks; ++c) scratch.counts[c + 1] += scratch.counts[c];
  KASCADE_CHECK(scratch.counts[chunks] == k, "top-k: selected " << scratch.counts[chunks] << " of " << n
                                                                 << " values, wanted " << k);
  for_each_chunk(pool, chunks, [&](int c) {
    int32_t* dst = out + scratch.counts[c];
    for (int i = chunk_begin(c); i < chunk_end(c); ++i) {
      if (rank_of(values, i) >= threshold) *dst++ = i;
    }
  });
}

}  // namespace kascade::engine::cpu
