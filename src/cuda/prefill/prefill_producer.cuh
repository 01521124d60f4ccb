// prefill_producer.cuh — the producer warpgroup's copy of a key block into a ring slot, shared by
// attend_kernel (its K and V blocks, prefill_attend.cuh) and pooled_mass_kernel (its K blocks,
// prefill_mass.cuh). Producer thread t resolves key row t of each block to its element offset in
// the paged cache (each kernel its own way, one block ahead); the copy passes the offsets along
// by shuffles and issues the block's cp.async copies, warp w writing rows 32w .. 32w+31.
#pragma once

#include "prefill_common.cuh"

namespace kascade::cuda::prefill {

// Copies of one [kBlockKeys][D] key block into a swizzled tile (SwizzledTile<D, kBlockKeys>) for
// producer thread `resolver` (0 .. kBlockKeys-1, one per key row). Copy i of a warp writes row
// r = i * kRowsPerCopy + lane / kChunks of the warp's 32, and its swizzled position splits into a
// part fixed per lane and a compile-time part, since r % 8 = (i * kRowsPerCopy) % 8 ^ lane / kChunks
// (spelled out so that the compiler does not keep one precomputed offset per copy in registers).
template <int D, typename T>
class KeyBlockCopy {
 public:
  static constexpr int kChunks = D / kChunkElems;    // 16-byte chunks of a row
  static constexpr int kRowsPerCopy = 32 / kChunks;  // rows one warp-wide cp.async covers
  static_assert(kChunks % 8 == 0 && kRowsPerCopy <= 8, "a row is whole swizzle atoms");

  // Element offset of thread `resolver`'s 16-byte chunk inside a row: its copies read column
  // base + row offset, with column base = K or V + kv head offset + column_offset(resolver).
  __device__ __forceinline__ static int column_offset(int resolver) { return chunk_of(resolver) * kChunkElems; }

  __device__ __forceinline__ explicit KeyBlockCopy(int resolver) {
    const int warp = resolver / 32, chunk = chunk_of(resolver);
    lane_row_ = (resolver % 32) / kChunks;
    lane_swizzle_ = (chunk % 8) ^ lane_row_;
    lane_offset_ = (chunk / 8) * SwizzledTile<D, kBlockKeys>::kPanelStride + (warp * 32 + lane_row_) * kPanelElems;
  }

  // The warp's rows of one block: row r from the element offset `offset` of the warp's lane r
  // (relative to column_base), zero-filled where that offset is -1 (a zero P times stale V could
  // still be NaN; the mass of such keys is never stored).
  __device__ __forceinline__ void operator()(T* tile, const T* column_base, int64_t offset) const {
    const uint32_t offset_lo = static_cast<uint32_t>(offset);
    const uint32_t offset_hi = static_cast<uint32_t>(static_cast<uint64_t>(offset) >> 32);
    T* lane_tile = tile + lane_offset_;
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int r = i * kRowsPerCopy + lane_row_;
      const uint64_t hi = __shfl_sync(0xffffffffu, offset_hi, r), lo = __shfl_sync(0xffffffffu, offset_lo, r);
      const int64_t row = static_cast<int64_t>((hi << 32) | lo);
      const bool valid = row >= 0;
      T* dst = lane_tile + i * kRowsPerCopy * kPanelElems + (lane_swizzle_ ^ ((i * kRowsPerCopy) % 8)) * kChunkElems;
      cp_async16(dst, column_base + (valid ? row : 0), valid);
    }
  }

 private:
  __device__ __forceinline__ static int chunk_of(int resolver) { return (resolver % 32) % kChunks; }

  int lane_row_, lane_swizzle_, lane_offset_;
};

}  // namespace kascade::cuda::prefill
