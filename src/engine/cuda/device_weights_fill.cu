// The device-side normal generator of random_weights (device_weights.h).
#include <cuda_bf16.h>

#include "common/cuda_check.h"
#include "common/device_math.cuh"
#include "device_weights.h"

namespace kascade::engine::cuda {
namespace {

constexpr int kFillThreads = 256;
constexpr int kFillBlocksPerSm = 8;
constexpr float kTwoPi = 6.283185307179586f;

template <bool kBf16>
__global__ void fill_normal_kernel(void* data, size_t count, float mean, float stddev, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    // Two uniforms from two counters (2i, 2i + 1); u1 in (0, 1] keeps the logarithm finite.
    const float u1 = 1.f - kascade::cuda::counter_uniform24(seed, 2 * i);
    const float u2 = kascade::cuda::counter_uniform24(seed, 2 * i + 1);
    const float x = mean + stddev * sqrtf(-2.f * logf(u1)) * cosf(kTwoPi * u2);
    if constexpr (kBf16) {
      static_cast<bf16*>(data)[i] = __float2bfloat16_rn(x);
    } else {
      static_cast<float*>(data)[i] = x;
    }
  }
}

}  // namespace

void fill_normal(void* data, bool as_bf16, size_t count, float mean, float stddev, uint64_t seed,
                 cudaStream_t stream) {
  if (count == 0) return;
  int device = 0, sms = 0;
  KASCADE_CUDA_CHECK(cudaGetDevice(&device));
  KASCADE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int blocks = sms * kFillBlocksPerSm;
  if (as_bf16) {
    fill_normal_kernel<true><<<blocks, kFillThreads, 0, stream>>>(data, count, mean, stddev, seed);
  } else {
    fill_normal_kernel<false><<<blocks, kFillThreads, 0, stream>>>(data, count, mean, stddev, seed);
  }
  KASCADE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kascade::engine::cuda
