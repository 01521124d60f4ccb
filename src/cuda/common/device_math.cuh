// src/cuda/common/device_math.cuh — small device helpers shared by the kernel families.
//
// - StorageTraits: fp32 -> storage type (bf16 / fp16) conversion for outputs.
// - FastDivmod: division by a run-time constant (the page size) through a multiply-high, so that
//   the per-row page lookup costs a few instructions instead of a 32-bit integer division.
// - Warp/block scans used by the top-k selection.
// - counter_uniform24: a stateless hash of (seed, index) into [0, 1), for device-side random fills
//   of large buffers (benchmarks, random-weight models) that must not depend on launch shape.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace kascade::cuda {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
struct StorageTraits;

template <>
struct StorageTraits<__nv_bfloat16> {
  __device__ static __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
};

template <>
struct StorageTraits<__half> {
  __device__ static __half from_float(float x) { return __float2half_rn(x); }
};

// n / d and n % d for 0 <= n < 2^31 and a divisor fixed at launch (Granlund-Montgomery).
struct FastDivmod {
  uint32_t divisor = 1;
  uint32_t multiplier = 0;
  uint32_t shift = 0;

  FastDivmod() = default;
  __host__ explicit FastDivmod(uint32_t d) : divisor(d) {
    // shift = ceil(log2(d)); multiplier = floor(2^32 * (2^shift - d) / d) + 1.
    while ((1ull << shift) < d) ++shift;
    multiplier = static_cast<uint32_t>(((1ull << 32) * ((1ull << shift) - d)) / d + 1);
  }
  __device__ __forceinline__ void divmod(uint32_t n, uint32_t& quotient, uint32_t& remainder) const {
    const uint32_t hi = __umulhi(n, multiplier);
    quotient = static_cast<uint32_t>((static_cast<uint64_t>(hi) + n) >> shift);
    remainder = n - quotient * divisor;
  }
};

// Inclusive sum over the lanes of a warp.
__device__ __forceinline__ int warp_inclusive_sum(int value) {
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int offset = 1; offset < kWarpSize; offset <<= 1) {
    const int other = __shfl_up_sync(kFullMask, value, offset);
    if (lane >= offset) value += other;
  }
  return value;
}

// Exclusive sum over the block in thread order; `scratch` is shared memory of kWarpSize + 1 ints
// and `block_total` receives the sum of all values. Every thread of the block must call it.
constexpr int kBlockScanScratch = kWarpSize + 1;
__device__ __forceinline__ int block_exclusive_sum(int value, int* scratch, int& block_total) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int num_warps = (blockDim.x + kWarpSize - 1) / kWarpSize;
  const int inclusive = warp_inclusive_sum(value);
  if (lane == kWarpSize - 1) scratch[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    const int warp_sum = lane < num_warps ? scratch[lane] : 0;
    const int scanned = warp_inclusive_sum(warp_sum);
    if (lane < num_warps) scratch[lane] = scanned - warp_sum;  // exclusive prefix of each warp
    if (lane == kWarpSize - 1) scratch[kWarpSize] = scanned;   // the block's total
  }
  __syncthreads();
  const int result = scratch[warp] + inclusive - value;
  block_total = scratch[kWarpSize];
  __syncthreads();  // scratch may be reused by the next call
  return result;
}

// splitmix64's finaliser of seed * golden-ratio + index; the top 24 bits as a float in [0, 1).
__device__ __forceinline__ float counter_uniform24(uint64_t seed, uint64_t index) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + index;
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return static_cast<float>(x >> 40) * (1.f / 16777216.f);
}

}  // namespace kascade::cuda
