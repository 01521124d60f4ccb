// src/cuda/common/cuda_check.h — the one wrapper for CUDA runtime calls and kernel launches.
//
// Turns a failed CUDA call into a kascade::Error naming the call, the CUDA error, file and line:
//   KASCADE_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream));
//   my_kernel<<<grid, block, 0, stream>>>(params);
//   KASCADE_CUDA_CHECK(cudaGetLastError());
#pragma once

#include <cuda_runtime_api.h>

#include "kascade/error.h"

namespace kascade::cuda {
// Throws kascade::Error for a failed CUDA call named `what` (for checks outside the macro).
[[noreturn]] inline void throw_cuda_error(const char* what, cudaError_t status) {
  KASCADE_FAIL(what << " failed: " << cudaGetErrorName(status) << " (" << cudaGetErrorString(status) << ")");
}
}  // namespace kascade::cuda

#define KASCADE_CUDA_CHECK(call)                                                              \
  do {                                                                                        \
    const cudaError_t kascade_cuda_status_ = (call);                                          \
    KASCADE_CHECK(kascade_cuda_status_ == cudaSuccess,                                        \
                  #call << " failed: " << cudaGetErrorName(kascade_cuda_status_) << " ("     \
                        << cudaGetErrorString(kascade_cuda_status_) << ") at " << __FILE__   \
                        << ":" << __LINE__);                                                  \
  } while (0)
