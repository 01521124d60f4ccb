// src/cuda/decode/decode_split_kernel.cuh — one split of split-KV flash-decoding, for every role.
//
// A block owns (split, kv head, sequence) and computes, for all G query heads of the group at once
// (each K/V row is read once for the whole group), the online-softmax statistics and, when the role
// reads values, the unnormalised output of its share of the keys. decode_combine merges the splits.
//
// Work layout (memory-bound: the goal is 16-byte loads with several rows in flight per thread):
//   a row of D elements is read by D/8 lanes, 8 elements (16 bytes) each; a warp covers
//   32/(D/8) rows side by side ("row slots") and kUnroll such groups per step, all loads of a step
//   issued before the first use. Dot products are reduced across the row's lanes with xor shuffles,
//   so every lane of a row slot holds the full logits and keeps identical softmax statistics.
// Key sources: positions 0..n-1 (dense roles) or the entries of a selection (SparseSplit), always
// translated through the page table, so contiguous caches are the one-page case.
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "../common/device_math.cuh"
#include "decode_params.h"

namespace kascade::cuda {

// Merges statistics and accumulators (m, l, acc) of two disjoint key sets into the first.
template <int kGroupCap, int kElems>
__device__ __forceinline__ void merge_softmax_state(float (&m)[kGroupCap], float (&l)[kGroupCap],
                                                    float (&acc)[kGroupCap][kElems], int h, float m_other,
                                                    float l_other, const float (&acc_other)[kElems]) {
  const float m_new = fmaxf(m[h], m_other);
  if (m_new == -INFINITY) return;  // both sides empty
  const float scale_self = exp2f(m[h] - m_new);
  const float scale_other = exp2f(m_other - m_new);
  l[h] = l[h] * scale_self + l_other * scale_other;
#pragma unroll
  for (int e = 0; e < kElems; ++e) acc[h][e] = acc[h][e] * scale_self + acc_other[e] * scale_other;
  m[h] = m_new;
}

template <typename T, int kHeadDim, int kGroupCap, typename Role>
__global__ void __launch_bounds__(kDecodeThreads)
    decode_split_kernel(const __grid_constant__ DecodeSplitParams p) {
  constexpr int kElems = 8;                              // one 16-byte vector per lane
  constexpr int kLanesPerRow = kHeadDim / kElems;        // 16 (D=128) or 8 (D=64)
  constexpr int kRowSlots = kWarpSize / kLanesPerRow;    // rows a warp reads side by side
  constexpr int kWarps = kDecodeThreads / kWarpSize;
  constexpr int kUnroll = 4;                             // row groups in flight per step
  constexpr int kRowsPerWarpStep = kRowSlots * kWarps;   // distance between a warp's unrolled rows
  constexpr int kRowsPerBlockStep = kRowsPerWarpStep * kUnroll;
  constexpr int kAccElems = Role::kReadsValues ? kElems : 1;
  static_assert(kHeadDim % (kElems * 4) == 0 && kLanesPerRow <= kWarpSize, "head dim must be 64 or 128");
  static_assert(kGroupCap <= kLanesPerRow, "a row's lanes write the group's logits, one head each");

  const int split = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int b = blockIdx.z;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int row_slot = lane / kLanesPerRow;
  const int lane_in_row = lane % kLanesPerRow;
  const int group = p.group;
  const int first_q_head = kv_head * group;

  const int n = min(p.seq_lens[b], p.max_seq_len);
  const int32_t* key_list = nullptr;  // [num_keys] positions (sparse role)
  int num_keys = n;
  if constexpr (Role::kIndexedKeys) {
    const int set = p.num_sets == 1 ? 0 : (p.head_map != nullptr ? p.head_map[kv_head] : kv_head);
    key_list = p.sel_indices + (static_cast<int64_t>(b) * p.num_sets + set) * p.sel_kmax;
    num_keys = min(p.sel_counts[b * p.num_sets + set], p.sel_kmax);
  }
  const int chunk = (num_keys + p.num_splits - 1) / p.num_splits;
  const int begin = split * chunk;
  const int end = min(num_keys, begin + chunk);

  // Query fragment of every head of the group, pre-scaled into the log2 domain.
  float q[kGroupCap][kElems];
#pragma unroll
  for (int h = 0; h < kGroupCap; ++h) {
    if (h < group) {
      const T* q_row = static_cast<const T*>(p.q) +
                       (static_cast<int64_t>(b) * p.num_q_heads + first_q_head + h) * kHeadDim;
      widen8<T>(*reinterpret_cast<const uint4*>(q_row + lane_in_row * kElems), q[h]);
#pragma unroll
      for (int e = 0; e < kElems; ++e) q[h][e] *= p.scale_log2;
    } else {
#pragma unroll
      for (int e = 0; e < kElems; ++e) q[h][e] = 0.f;
    }
  }

  float m[kGroupCap], l[kGroupCap], acc[kGroupCap][kAccElems];
#pragma unroll
  for (int h = 0; h < kGroupCap; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.f;
#pragma unroll
    for (int e = 0; e < kAccElems; ++e) acc[h][e] = 0.f;
  }

  const int32_t* pages = p.page_indices + p.page_indptr[b];
  const int64_t head_offset = kv_head * p.head_stride + lane_in_row * kElems;
  const T* k_base = static_cast<const T*>(p.k) + head_offset;
  const T* v_base = static_cast<const T*>(p.v) + head_offset;
  float* score_rows = nullptr;  // this lane's head row of the logits (lane_in_row < group)
  if constexpr (Role::kWritesScores) {
    score_rows = p.scores + (static_cast<int64_t>(b) * p.num_q_heads + first_q_head + lane_in_row) * p.score_stride;
  }

  // Warp-uniform loop: every lane runs the same trip count, so full-mask shuffles are safe.
  for (int base = begin + warp * kRowSlots; base < end; base += kRowsPerBlockStep) {
    int key[kUnroll];
    bool valid[kUnroll];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) {
      const int pos = base + j * kRowsPerWarpStep + row_slot;
      valid[j] = pos < end;
      if constexpr (Role::kIndexedKeys) {
        key[j] = valid[j] ? key_list[pos] : 0;
      } else {
        key[j] = valid[j] ? pos : 0;
      }
    }
    int64_t offset[kUnroll];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) {
      uint32_t page_slot, in_page;
      p.page_size.divmod(static_cast<uint32_t>(key[j]), page_slot, in_page);
      const int64_t page = valid[j] ? pages[page_slot] : 0;
      offset[j] = page * p.page_stride + static_cast<int64_t>(in_page) * p.token_stride;
    }
    uint4 k_raw[kUnroll];
    uint4 v_raw[kUnroll];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) {
      k_raw[j] = valid[j] ? load_streaming16(k_base + offset[j]) : make_uint4(0, 0, 0, 0);
      if constexpr (Role::kReadsValues) {
        v_raw[j] = valid[j] ? load_streaming16(v_base + offset[j]) : make_uint4(0, 0, 0, 0);
      }
    }

    float s[kUnroll][kGroupCap];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) {
      float k_f[kElems];
      widen8<T>(k_raw[j], k_f);
#pragma unroll
      for (int h = 0; h < kGroupCap; ++h) {
        float dot = 0.f;
#pragma unroll
        for (int e = 0; e < kElems; ++e) dot = fmaf(q[h][e], k_f[e], dot);
        s[j][h] = dot;
      }
    }
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) {
#pragma unroll
      for (int h = 0; h < kGroupCap; ++h) {
        if (h < group) {
#pragma unroll
          for (int offset_lanes = kLanesPerRow / 2; offset_lanes > 0; offset_lanes /= 2) {
            s[j][h] += __shfl_xor_sync(kFullMask, s[j][h], offset_lanes);
          }
        }
        if (!valid[j]) s[j][h] = -INFINITY;
      }
    }

    if constexpr (Role::kWritesScores) {
#pragma unroll
      for (int j = 0; j < kUnroll; ++j) {
        float mine = 0.f;
#pragma unroll
        for (int h = 0; h < kGroupCap; ++h) {
          if (lane_in_row == h) mine = s[j][h];
        }
        if (valid[j] && lane_in_row < group) score_rows[key[j]] = mine;
      }
    }

    float v_f[Role::kReadsValues ? kUnroll : 1][kElems];
    if constexpr (Role::kReadsValues) {
#pragma unroll
      for (int j = 0; j < kUnroll; ++j) widen8<T>(v_raw[j], v_f[j]);
    }
#pragma unroll
    for (int h = 0; h < kGroupCap; ++h) {
      if (h >= group) continue;
      float step_max = s[0][h];
#pragma unroll
      for (int j = 1; j < kUnroll; ++j) step_max = fmaxf(step_max, s[j][h]);
      const float m_new = fmaxf(m[h], step_max);
      if (m_new == -INFINITY) continue;  // no valid key yet in this row slot
      const float correction = exp2f(m[h] - m_new);
      float prob[kUnroll];
      float prob_sum = 0.f;
#pragma unroll
      for (int j = 0; j < kUnroll; ++j) {
        prob[j] = exp2f(s[j][h] - m_new);
        prob_sum += prob[j];
      }
      l[h] = l[h] * correction + prob_sum;
      m[h] = m_new;
      if constexpr (Role::kReadsValues) {
#pragma unroll
        for (int e = 0; e < kElems; ++e) {
          float a = acc[h][e] * correction;
#pragma unroll
          for (int j = 0; j < kUnroll; ++j) a = fmaf(prob[j], v_f[j][e], a);
          acc[h][e] = a;
        }
      }
    }
  }

  // Merge the row slots of the warp (lanes kLanesPerRow apart hold the same dims of other rows).
#pragma unroll
  for (int offset_lanes = kLanesPerRow; offset_lanes < kWarpSize; offset_lanes *= 2) {
#pragma unroll
    for (int h = 0; h < kGroupCap; ++h) {
      if (h >= group) continue;
      const float m_other = __shfl_xor_sync(kFullMask, m[h], offset_lanes);
      const float l_other = __shfl_xor_sync(kFullMask, l[h], offset_lanes);
      float acc_other[kAccElems];
#pragma unroll
      for (int e = 0; e < kAccElems; ++e) acc_other[e] = __shfl_xor_sync(kFullMask, acc[h][e], offset_lanes);
      merge_softmax_state<kGroupCap, kAccElems>(m, l, acc, h, m_other, l_other, acc_other);
    }
  }

  // Merge the warps through shared memory; warp 0's first row slot writes the split's result.
  __shared__ float smem_acc[kWarps][kGroupCap][kLanesPerRow][kAccElems];
  __shared__ float2 smem_ml[kWarps][kGroupCap];
  if (row_slot == 0) {
#pragma unroll
    for (int h = 0; h < kGroupCap; ++h) {
#pragma unroll
      for (int e = 0; e < kAccElems; ++e) smem_acc[warp][h][lane_in_row][e] = acc[h][e];
      if (lane_in_row == 0) smem_ml[warp][h] = make_float2(m[h], l[h]);
    }
  }
  __syncthreads();
  if (warp != 0 || row_slot != 0) return;
  for (int other = 1; other < kWarps; ++other) {
#pragma unroll
    for (int h = 0; h < kGroupCap; ++h) {
      if (h >= group) continue;
      const float2 ml = smem_ml[other][h];
      float acc_other[kAccElems];
#pragma unroll
      for (int e = 0; e < kAccElems; ++e) acc_other[e] = smem_acc[other][h][lane_in_row][e];
      merge_softmax_state<kGroupCap, kAccElems>(m, l, acc, h, ml.x, ml.y, acc_other);
    }
  }
#pragma unroll
  for (int h = 0; h < kGroupCap; ++h) {
    if (h >= group) continue;
    const int64_t row = (static_cast<int64_t>(b) * p.num_q_heads + first_q_head + h) * p.num_splits + split;
    if (lane_in_row == 0) p.partial_ml[row] = make_float2(m[h], l[h]);
    if constexpr (Role::kReadsValues) {
      float4* dst = reinterpret_cast<float4*>(p.partial_out + row * kHeadDim + lane_in_row * kElems);
      dst[0] = make_float4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
      dst[1] = make_float4(acc[h][4], acc[h][5], acc[h][6], acc[h][7]);
    }
  }
}

template <typename T, int kHeadDim, int kGroupCap, typename Role>
void launch_decode_split(const DecodeSplitParams& params, dim3 grid, cudaStream_t stream) {
  decode_split_kernel<T, kHeadDim, kGroupCap, Role><<<grid, kDecodeThreads, 0, stream>>>(params);
}

// Explicit instantiation of every (group cap, role) launcher for one storage type and head dim.
#define KASCADE_INSTANTIATE_DECODE_SPLIT(T, D)                                                     \
  template void launch_decode_split<T, D, 4, DenseSplit>(const DecodeSplitParams&, dim3, cudaStream_t);  \
  template void launch_decode_split<T, D, 8, DenseSplit>(const DecodeSplitParams&, dim3, cudaStream_t);  \
  template void launch_decode_split<T, D, 4, Layer0Split>(const DecodeSplitParams&, dim3, cudaStream_t); \
  template void launch_decode_split<T, D, 8, Layer0Split>(const DecodeSplitParams&, dim3, cudaStream_t); \
  template void launch_decode_split<T, D, 4, ScoresSplit>(const DecodeSplitParams&, dim3, cudaStream_t); \
  template void launch_decode_split<T, D, 8, ScoresSplit>(const DecodeSplitParams&, dim3, cudaStream_t); \
  template void launch_decode_split<T, D, 4, SparseSplit>(const DecodeSplitParams&, dim3, cudaStream_t); \
  template void launch_decode_split<T, D, 8, SparseSplit>(const DecodeSplitParams&, dim3, cudaStream_t);

}  // namespace kascade::cuda
