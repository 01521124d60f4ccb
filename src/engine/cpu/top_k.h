// src/engine/cpu/top_k.h — SPEC 4.3 / 5.3's selection (the k largest values, ties toward the
// lower index) in linear time, threaded: a radix select on the values' fp32 bits. Internal to
// the engine library.
#pragma once

#include <cstdint>
#include <vector>

namespace kascade::engine::cpu {

class ThreadPool;

// Values per chunk: the unit of the threaded passes. The result does not depend on it, nor
// on the thread count.
constexpr int kTopKChunk = 2048;

// Reused between calls: per-chunk histograms and counts, the boundary bin's candidates.
struct TopKScratch {
  std::vector<uint32_t> histograms;
  std::vector<int32_t> counts;
  std::vector<uint64_t> candidates;
};

// Writes the indices of the k largest of values[0..n) into out (k entries), ascending; among
// equal values the lower index wins (-0 equals +0). values must be finite. k >= n selects
// every index (out then holds n entries); k <= 0 selects none. pool: null runs on the caller.
void select_top_k(ThreadPool* pool, const float* values, int n, int k, TopKScratch& scratch, int32_t* out);

}  // namespace kascade::engine::cpu
