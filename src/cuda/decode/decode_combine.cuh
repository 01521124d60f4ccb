// src/cuda/decode/decode_combine.cuh — merges the splits of split-KV decoding.
//
// One block per (sequence, query head): M = max over splits of m_s, L = sum l_s * 2^(m_s - M),
// out = sum acc_s * 2^(m_s - M) / L. Also publishes (M, L), the exact softmax statistics that the
// anchor's pooled probabilities need. A head with no keys (n = 0) gets a zero output and L = 0.
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "../common/device_math.cuh"
#include "decode_params.h"

namespace kascade::cuda {

constexpr int kCombineThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kCombineThreads) decode_combine_kernel(const __grid_constant__ DecodeCombineParams p) {
  __shared__ float weights[kMaxDecodeSplits];
  __shared__ float reduce_scratch[kCombineThreads / kWarpSize];
  const int row = blockIdx.x;
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const float2* ml = p.partial_ml + static_cast<int64_t>(row) * p.num_splits;

  // Block-wide max of the split maxima.
  float local_max = -INFINITY;
  for (int s = threadIdx.x; s < p.num_splits; s += blockDim.x) local_max = fmaxf(local_max, ml[s].x);
  for (int o = kWarpSize / 2; o > 0; o /= 2) local_max = fmaxf(local_max, __shfl_xor_sync(kFullMask, local_max, o));
  if (lane == 0) reduce_scratch[warp] = local_max;
  __syncthreads();
  float global_max = -INFINITY;
  for (int w = 0; w < kCombineThreads / kWarpSize; ++w) global_max = fmaxf(global_max, reduce_scratch[w]);
  __syncthreads();

  // Split weights and the block-wide sum.
  float local_sum = 0.f;
  for (int s = threadIdx.x; s < p.num_splits; s += blockDim.x) {
    const float2 split_ml = ml[s];
    const float w = (split_ml.y > 0.f) ? exp2f(split_ml.x - global_max) : 0.f;
    weights[s] = w;
    local_sum += split_ml.y * w;
  }
  for (int o = kWarpSize / 2; o > 0; o /= 2) local_sum += __shfl_xor_sync(kFullMask, local_sum, o);
  if (lane == 0) reduce_scratch[warp] = local_sum;
  __syncthreads();
  float global_sum = 0.f;
  for (int w = 0; w < kCombineThreads / kWarpSize; ++w) global_sum += reduce_scratch[w];

  if (p.head_ml != nullptr && threadIdx.x == 0) p.head_ml[row] = make_float2(global_max, global_sum);
  if (p.out == nullptr) return;
  const float inv_sum = global_sum > 0.f ? 1.f / global_sum : 0.f;

  // Weighted sum over splits: a thread owns 4 dims (16-byte loads); groups of D / 4 threads take
  // splits in turn (4 groups for D = 128, 8 for D = 64) and meet in shared memory.
  __shared__ float4 partial_sums[kCombineThreads];
  const int lanes_per_split = p.head_dim / 4;             // 32 (D = 128) or 16 (D = 64)
  const int groups = kCombineThreads / lanes_per_split;   // splits processed side by side
  const int my_group = threadIdx.x / lanes_per_split;
  const int d4 = threadIdx.x % lanes_per_split;
  const float4* acc = reinterpret_cast<const float4*>(p.partial_out + static_cast<int64_t>(row) * p.num_splits * p.head_dim);
  float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int s = my_group; s < p.num_splits; s += groups) {
    const float w = weights[s];
    if (w == 0.f) continue;
    const float4 a = acc[static_cast<int64_t>(s) * lanes_per_split + d4];
    sum.x = fmaf(a.x, w, sum.x);
    sum.y = fmaf(a.y, w, sum.y);
    sum.z = fmaf(a.z, w, sum.z);
    sum.w = fmaf(a.w, w, sum.w);
  }
  partial_sums[threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.x >= lanes_per_split) return;
  for (int other = 1; other < groups; ++other) {
    const float4 a = partial_sums[other * lanes_per_split + d4];
    sum.x += a.x;
    sum.y += a.y;
    sum.z += a.z;
    sum.w += a.w;
  }
  T* out = static_cast<T*>(p.out) + static_cast<int64_t>(row) * p.head_dim + d4 * 4;
  out[0] = StorageTraits<T>::from_float(sum.x * inv_sum);
  out[1] = StorageTraits<T>::from_float(sum.y * inv_sum);
  out[2] = StorageTraits<T>::from_float(sum.z * inv_sum);
  out[3] = StorageTraits<T>::from_float(sum.w * inv_sum);
}

template <typename T>
void launch_decode_combine(const DecodeCombineParams& params, cudaStream_t stream) {
  decode_combine_kernel<T><<<params.rows, kCombineThreads, 0, stream>>>(params);
}

}  // namespace kascade::cuda
