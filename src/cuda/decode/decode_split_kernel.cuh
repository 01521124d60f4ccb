// src/cuda/decode/decode_split_kernel.cuh — one split of split-KV flash-decoding, for every role,
// on tensor cores.
//
// A block owns (split, kv head, sequence); its 4 warps take tiles of 16 keys in turn. The G query
// heads of the group are the M dimension of mma.m16n8k16 (rows G..15 are zero), so each K/V row is
// read once for the whole group and the arithmetic costs a few MMAs per tile instead of thousands
// of scalar FMAs and shuffles (the scalar version of this kernel was issue-bound at ~2 TB/s).
//
// Data path, per warp and tile (memory-bound: the goal is every byte once, many bytes in flight):
//   cp.async (16 B, zero-fill past the end) of the tile's K and V rows into a warp-private
//   kStages-deep ring in shared memory, whole rows per copy instruction (full 128-byte lines per
//   L2 request: copying only the chunks a lane consumes made two requests per line and left the
//   kernel L2-bound at 2.6 TB/s). Row addresses go through the page table one tile ahead of the
//   copies (lanes 0..15 translate one key each and broadcast by shuffle).
//   S = Q K^T: lane (g, t) supplies key g's elements {32c + 8t .. 32c + 8t + 7 : c} as B fragments.
//   The head dimension is thus permuted, identically for Q (loaded the same way), which leaves the
//   dot products unchanged and makes every fragment register a plain 16-byte load's word.
//   Online softmax in the log2 domain on the fp32 accumulators (scale applied in fp32, exact q).
//   O += P V: P is re-packed from the S accumulators (the C layout of two n-tiles is the A layout);
//   V fragments pair two keys' values at one d with a byte permute; output column (n-tile j, n) is
//   d = 64 (j / 8) + 8 n + j % 8, undone when the block merges its warps.
// Roles are policies (decode_params.h): values or not, logits written or not, keys 0..n-1 or a
// selection's entries.
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "../common/cuda_check.h"
#include "../common/device_math.cuh"
#include "../common/mma_sm80.cuh"
#include "decode_params.h"

namespace kascade::cuda {

constexpr int kTileKeys = 16;  // keys per warp tile: the k extent of the P V product
constexpr int kDecodeStages = 3;

template <int kHeadDim, typename Role>
struct SplitTileShape {
  static constexpr int kWarps = kDecodeThreads / kWarpSize;
  static constexpr int kKChunks = kHeadDim / 32;  // 16-byte chunks of one key a lane reads for S
  static constexpr int kVChunks = kHeadDim / 64;  // 16-byte chunks of one key a lane reads for O
  static constexpr int kKSteps = kHeadDim / 16;   // mma k steps of S = Q K^T
  static constexpr int kNTiles = kHeadDim / 8;    // mma n tiles of O
  // A stage holds the tile's K rows then its V rows, [16 rows][kChunksPerRow] 16-byte chunks each.
  // A copy instruction moves whole rows (kRowsPerCopy rows of 32 lanes x 16 B), so each L2 request
  // covers full 128-byte lines; the consumers' reads are made conflict-free by swizzles (below).
  static constexpr int kChunksPerRow = kHeadDim / 8;
  static constexpr int kRowsPerCopy = kWarpSize / kChunksPerRow;
  static constexpr int kCopiesPerTile = kTileKeys / kRowsPerCopy;
  static constexpr int kRowsChunks = kTileKeys * kChunksPerRow;  // 16-byte chunks of K (or V) per stage
  static constexpr int kChunksPerStage = kRowsChunks * (Role::kReadsValues ? 2 : 1);
  static constexpr size_t kPipelineBytes = size_t{16} * kChunksPerStage * kDecodeStages * kWarps;
  static constexpr size_t kMergeBytes = sizeof(float) * kWarps * kMaxGroupCap * (kHeadDim + 2);
  static constexpr size_t kSmemBytes = kPipelineBytes > kMergeBytes ? kPipelineBytes : kMergeBytes;
  static_assert(kHeadDim == 64 || kHeadDim == 128, "head dim must be 64 or 128");
};

// Shared-memory chunk slots. S reads (lane g, t): row 8 nt + g, chunk 4c + t; the 8 lanes of a
// quarter-warp span rows 2k, 2k + 1, so flipping bit 2 of the chunk on odd rows puts them in 8
// distinct 16-byte bank groups. O reads: rows 2t + a, chunk 8c + g; xor-ing (row / 2) % 4 into
// bits 1-2 does the same. Copies write 8 consecutive chunks of one row per quarter-warp: distinct.
template <int kChunksPerRow>
__device__ __forceinline__ int k_slot(int row, int chunk) {
  return row * kChunksPerRow + (chunk ^ ((row & 1) << 2));
}
template <int kChunksPerRow>
__device__ __forceinline__ int v_slot(int row, int chunk) {
  return kTileKeys * kChunksPerRow + row * kChunksPerRow + (chunk ^ (((row >> 1) & 3) << 1));
}

// Byte permute selectors that pair the low (or high) halves of two words: {x.lo, y.lo} / {x.hi, y.hi}.
constexpr uint32_t kPairLowHalves = 0x5410;
constexpr uint32_t kPairHighHalves = 0x7632;

template <typename T, int kHeadDim, typename Role>
__global__ void __launch_bounds__(kDecodeThreads, 2)
    decode_split_kernel(const __grid_constant__ DecodeSplitParams p) {
  using Shape = SplitTileShape<kHeadDim, Role>;
  using Mma = Mma16816<T>;
  extern __shared__ __align__(16) unsigned char smem[];

  const int split = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int b = blockIdx.z;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int g = lane / 4;  // mma row (query head) and B column (key of an n-tile)
  const int t = lane % 4;
  const int group = p.group;
  const int first_q_head = kv_head * group;

  const int n = min(p.seq_lens[b], p.max_seq_len);
  const int32_t* key_list = nullptr;  // [num_keys] positions (sparse role)
  int num_keys = n;
  if constexpr (Role::kIndexedKeys) {
    const int set = p.num_sets == 1 ? 0 : (p.head_map != nullptr ? p.head_map[kv_head] : kv_head);
    // Device data cannot be validated on the host without a sync: a head-map entry outside
    // [0, num_sets) reads no set (zero output) instead of memory past the selection buffer.
    const bool set_valid = set >= 0 && set < p.num_sets;
    key_list = p.sel_indices + (static_cast<int64_t>(b) * p.num_sets + (set_valid ? set : 0)) * p.sel_kmax;
    num_keys = set_valid ? min(p.sel_counts[b * p.num_sets + set], p.sel_kmax) : 0;
  }
  // Splits start at multiples of the tile, so that logits are stored as aligned pairs.
  const int chunk = ((num_keys + p.num_splits - 1) / p.num_splits + kTileKeys - 1) / kTileKeys * kTileKeys;
  const int begin = min(num_keys, split * chunk);
  const int end = min(num_keys, begin + chunk);
  const int num_tiles = (end - begin + kTileKeys - 1) / kTileKeys;
  const int my_tiles = warp < num_tiles ? (num_tiles - warp + Shape::kWarps - 1) / Shape::kWarps : 0;

  // Q as A fragments (rows = heads of the group; rows >= G and g + 8 are zero).
  uint32_t q_frag[Shape::kKSteps][2];
  {
    uint32_t words[Shape::kKChunks * 4] = {};
    if (g < group) {
      const T* q_row = static_cast<const T*>(p.q) + (static_cast<int64_t>(b) * p.num_q_heads + first_q_head + g) * kHeadDim;
#pragma unroll
      for (int c = 0; c < Shape::kKChunks; ++c) {
        const uint4 v = *reinterpret_cast<const uint4*>(q_row + c * 32 + t * 8);
        words[4 * c] = v.x;
        words[4 * c + 1] = v.y;
        words[4 * c + 2] = v.z;
        words[4 * c + 3] = v.w;
      }
    }
#pragma unroll
    for (int s = 0; s < Shape::kKSteps; ++s) {
      q_frag[s][0] = words[2 * s];
      q_frag[s][1] = words[2 * s + 1];
    }
  }

  const int32_t* pages = p.page_indices + p.page_indptr[b];
  const T* k_head = static_cast<const T*>(p.k) + kv_head * p.head_stride;
  const T* v_head = static_cast<const T*>(p.v) + kv_head * p.head_stride;
  uint4* ring = reinterpret_cast<uint4*>(smem) + static_cast<size_t>(warp) * kDecodeStages * Shape::kChunksPerStage;

  // Address pipeline. Lane l translates key l % 16 of a tile: its position (a selection entry for
  // the sparse role) is loaded two tiles before the tile's copies are issued and its page-table
  // entry one tile before, so that no warp waits on a dependent index load in the main loop.
  struct KeyRef {
    int key;
    bool valid;
  };
  struct RowRef {
    int page;
    uint32_t in_page;
    bool valid;
  };
  auto key_of_tile = [&](int i) {
    const int pos = begin + (warp + i * Shape::kWarps) * kTileKeys + lane % kTileKeys;
    KeyRef r{0, i < my_tiles && pos < end};
    if (r.valid) r.key = Role::kIndexedKeys ? key_list[pos] : pos;
    // A selection entry outside [0, n) is skipped rather than looked up past the page table.
    if constexpr (Role::kIndexedKeys) r.valid = r.valid && r.key >= 0 && r.key < n;
    return r;
  };
  auto row_of_key = [&](const KeyRef& k) {
    uint32_t page_slot;
    RowRef r{0, 0u, k.valid};
    p.page_size.divmod(static_cast<uint32_t>(k.key), page_slot, r.in_page);
    if (k.valid) r.page = pages[page_slot];
    return r;
  };
  // Issues the copies of this warp's i-th tile into ring stage i % kStages (always commits a group).
  auto issue_tile = [&](int i, const RowRef& mine) {
    if (i < my_tiles) {
      const int64_t offset = mine.valid ? mine.page * p.page_stride + static_cast<int64_t>(mine.in_page) * p.token_stride : 0;
      uint4* stage = ring + static_cast<size_t>(i % kDecodeStages) * Shape::kChunksPerStage;
      const int chunk = lane % Shape::kChunksPerRow;
#pragma unroll
      for (int copy = 0; copy < Shape::kCopiesPerTile; ++copy) {
        const int row = copy * Shape::kRowsPerCopy + lane / Shape::kChunksPerRow;
        const int64_t row_offset = __shfl_sync(kFullMask, offset, row) + chunk * 8;
        const bool row_valid = __shfl_sync(kFullMask, mine.valid, row);
        cp_async16(stage + k_slot<Shape::kChunksPerRow>(row, chunk), k_head + row_offset, row_valid);
        if constexpr (Role::kReadsValues) {
          cp_async16(stage + v_slot<Shape::kChunksPerRow>(row, chunk), v_head + row_offset, row_valid);
        }
      }
    }
    cp_async_commit();
  };

  float m_row = -INFINITY;  // running max of row g (log2 domain), equal across the quad
  float l_part = 0.f;       // this lane's share of the running sum of row g
  float o[Role::kReadsValues ? Shape::kNTiles : 1][4];
#pragma unroll
  for (int j = 0; j < (Role::kReadsValues ? Shape::kNTiles : 1); ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float* score_row = nullptr;
  if constexpr (Role::kWritesScores) {
    score_row = p.scores + (static_cast<int64_t>(b) * p.num_q_heads + first_q_head + g) * p.score_stride;
  }

#pragma unroll
  for (int i = 0; i < kDecodeStages - 1; ++i) issue_tile(i, row_of_key(key_of_tile(i)));
  RowRef next_row = row_of_key(key_of_tile(kDecodeStages - 1));
  KeyRef next_key = key_of_tile(kDecodeStages);
  for (int i = 0; i < my_tiles; ++i) {
    cp_async_wait<kDecodeStages - 2>();
    __syncwarp();
    issue_tile(i + kDecodeStages - 1, next_row);
    next_row = row_of_key(next_key);
    next_key = key_of_tile(i + kDecodeStages + 1);
    const uint4* stage = ring + static_cast<size_t>(i % kDecodeStages) * Shape::kChunksPerStage;
    const int tile_begin = begin + (warp + i * Shape::kWarps) * kTileKeys;

    // S = Q K^T for two n-tiles of 8 keys.
    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int c = 0; c < Shape::kKChunks; ++c) {
        const uint4 kv = stage[k_slot<Shape::kChunksPerRow>(nt * 8 + g, 4 * c + t)];
        Mma::run(s[nt], q_frag[2 * c][0], 0u, q_frag[2 * c][1], 0u, kv.x, kv.y);
        Mma::run(s[nt], q_frag[2 * c + 1][0], 0u, q_frag[2 * c + 1][1], 0u, kv.z, kv.w);
      }
    }
    // Row g's logits of keys nt * 8 + 2t + e, scaled into the log2 domain, masked past the end.
    float x[2][2];
    float tile_max = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const int pos = tile_begin + nt * 8 + 2 * t;  // even: the split and tile starts are
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        x[nt][e] = pos + e < end ? s[nt][e] * p.scale_log2 : -INFINITY;
        tile_max = fmaxf(tile_max, x[nt][e]);
      }
      if constexpr (Role::kWritesScores) {
        if (g < group && pos + 1 < end) {
          *reinterpret_cast<float2*>(score_row + pos) = make_float2(x[nt][0], x[nt][1]);
        } else if (g < group && pos < end) {
          score_row[pos] = x[nt][0];
        }
      }
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 2));
    const float m_new = fmaxf(m_row, tile_max);
    // m_new is -inf only if no key of the split has been seen yet (then every p is 0).
    const float m_safe = m_new == -INFINITY ? 0.f : m_new;
    const float correction = exp2f(m_row - m_safe);
    float prob[2][2];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) prob[nt][e] = exp2f(x[nt][e] - m_safe);
    }
    l_part = l_part * correction + (prob[0][0] + prob[0][1]) + (prob[1][0] + prob[1][1]);
    m_row = m_new;

    if constexpr (Role::kReadsValues) {
      const uint32_t p_lo = Mma::pack(prob[0][0], prob[0][1]);  // keys 2t, 2t + 1
      const uint32_t p_hi = Mma::pack(prob[1][0], prob[1][1]);  // keys 2t + 8, 2t + 9
#pragma unroll
      for (int c = 0; c < Shape::kVChunks; ++c) {
        const uint4 v0 = stage[v_slot<Shape::kChunksPerRow>(2 * t + 0 + 0, 8 * c + g)];
        const uint4 v1 = stage[v_slot<Shape::kChunksPerRow>(2 * t + 1 + 0, 8 * c + g)];
        const uint4 v2 = stage[v_slot<Shape::kChunksPerRow>(2 * t + 0 + 8, 8 * c + g)];
        const uint4 v3 = stage[v_slot<Shape::kChunksPerRow>(2 * t + 1 + 8, 8 * c + g)];
        const uint32_t w0[4] = {v0.x, v0.y, v0.z, v0.w};
        const uint32_t w1[4] = {v1.x, v1.y, v1.z, v1.w};
        const uint32_t w2[4] = {v2.x, v2.y, v2.z, v2.w};
        const uint32_t w3[4] = {v3.x, v3.y, v3.z, v3.w};
#pragma unroll
        for (int e = 0; e < 8; ++e) {  // n-tile j = 8c + e holds element e of this lane's chunk
          const int j = c * 8 + e;
          const uint32_t selector = (e & 1) ? kPairHighHalves : kPairLowHalves;
          const uint32_t b0 = __byte_perm(w0[e / 2], w1[e / 2], selector);
          const uint32_t b1 = __byte_perm(w2[e / 2], w3[e / 2], selector);
          o[j][0] *= correction;
          o[j][1] *= correction;
          Mma::run(o[j], p_lo, 0u, p_hi, 0u, b0, b1);
        }
      }
    }
  }
  cp_async_wait<0>();

  // Row sums across the quad; then merge the warps through shared memory (reusing the ring).
  l_part += __shfl_xor_sync(kFullMask, l_part, 1);
  l_part += __shfl_xor_sync(kFullMask, l_part, 2);
  __syncthreads();
  float* merge_o = reinterpret_cast<float*>(smem);                                   // [warps][8][D]
  float* merge_ml = merge_o + Shape::kWarps * kMaxGroupCap * kHeadDim;                // [warps][8][2]
  if (g < group) {
    if constexpr (Role::kReadsValues) {
#pragma unroll
      for (int j = 0; j < Shape::kNTiles; ++j) {
        const int d0 = 64 * (j / 8) + 8 * (2 * t) + j % 8;
        float* row = merge_o + (warp * kMaxGroupCap + g) * kHeadDim;
        row[d0] = o[j][0];
        row[d0 + 8] = o[j][1];
      }
    }
    if (t == 0) {
      merge_ml[(warp * kMaxGroupCap + g) * 2] = m_row;
      merge_ml[(warp * kMaxGroupCap + g) * 2 + 1] = l_part;
    }
  }
  __syncthreads();
  const int out_dims = Role::kReadsValues ? kHeadDim : 1;
  for (int idx = threadIdx.x; idx < group * out_dims; idx += kDecodeThreads) {
    const int h = idx / out_dims;
    const int d = idx % out_dims;
    float m_max = -INFINITY;
#pragma unroll
    for (int w = 0; w < Shape::kWarps; ++w) m_max = fmaxf(m_max, merge_ml[(w * kMaxGroupCap + h) * 2]);
    const float m_safe = m_max == -INFINITY ? 0.f : m_max;
    float acc = 0.f, l_sum = 0.f;
#pragma unroll
    for (int w = 0; w < Shape::kWarps; ++w) {
      const float weight = exp2f(merge_ml[(w * kMaxGroupCap + h) * 2] - m_safe);
      l_sum += merge_ml[(w * kMaxGroupCap + h) * 2 + 1] * weight;
      if constexpr (Role::kReadsValues) acc += merge_o[(w * kMaxGroupCap + h) * kHeadDim + d] * weight;
    }
    const int64_t row = (static_cast<int64_t>(b) * p.num_q_heads + first_q_head + h) * p.num_splits + split;
    if (d == 0) p.partial_ml[row] = make_float2(m_max, l_sum);
    if constexpr (Role::kReadsValues) p.partial_out[row * kHeadDim + d] = acc;
  }
}

template <typename T, int kHeadDim, typename Role>
void launch_decode_split(const DecodeSplitParams& params, dim3 grid, cudaStream_t stream) {
  constexpr size_t kSmem = SplitTileShape<kHeadDim, Role>::kSmemBytes;
  // Above 48 KB of dynamic shared memory a kernel must opt in once (not a stream operation, so it
  // is also safe while a graph is being captured).
  static const cudaError_t opt_in = cudaFuncSetAttribute(decode_split_kernel<T, kHeadDim, Role>,
                                                         cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem));
  if (opt_in != cudaSuccess) throw_cuda_error("cudaFuncSetAttribute(decode_split_kernel)", opt_in);
  decode_split_kernel<T, kHeadDim, Role><<<grid, kDecodeThreads, kSmem, stream>>>(params);
}

// Explicit instantiation of every role's launcher for one storage type and head dim.
#define KASCADE_INSTANTIATE_DECODE_SPLIT(T, D)                                                     \
  template void launch_decode_split<T, D, DenseSplit>(const DecodeSplitParams&, dim3, cudaStream_t);  \
  template void launch_decode_split<T, D, Layer0Split>(const DecodeSplitParams&, dim3, cudaStream_t); \
  template void launch_decode_split<T, D, ScoresSplit>(const DecodeSplitParams&, dim3, cudaStream_t); \
  template void launch_decode_split<T, D, SparseSplit>(const DecodeSplitParams&, dim3, cudaStream_t);

}  // namespace kascade::cuda
