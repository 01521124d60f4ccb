// bench/fill_random.cu — see fill_random.h.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/cuda_check.h"
#include "common/device_math.cuh"
#include "fill_random.h"

namespace kascade::bench {
namespace {

template <typename T>
__global__ void fill_kernel(T* data, size_t count, float amplitude, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float unit = kascade::cuda::counter_uniform24(seed, i);  // [0, 1)
    const float x = (2.f * unit - 1.f) * amplitude;
    if constexpr (sizeof(T) == 2 && std::is_same_v<T, __half>) {
      data[i] = __float2half_rn(x);
    } else {
      data[i] = __float2bfloat16_rn(x);
    }
  }
}

}  // namespace

void fill_uniform(void* data, DType dtype, size_t count, float amplitude, uint64_t seed, cudaStream_t stream) {
  constexpr int kThreads = 256;
  constexpr int kBlocks = 132 * 16;
  if (dtype == DType::F16) {
    fill_kernel<<<kBlocks, kThreads, 0, stream>>>(static_cast<__half*>(data), count, amplitude, seed);
  } else {
    KASCADE_CHECK(dtype == DType::BF16, "fill_uniform: dtype " << dtype_name(dtype) << " is not bf16 or f16");
    fill_kernel<<<kBlocks, kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(data), count, amplitude, seed);
  }
  KASCADE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kascade::bench
