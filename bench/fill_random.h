// bench/fill_random.h — device-side random fill of large benchmark buffers (tens of GB: filling
// them from the host would take longer than the benchmark).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kascade/tensor.h"

namespace kascade::bench {

// Uniform values in [-amplitude, amplitude] stored as `dtype` (bf16 or f16), from a counter hash.
void fill_uniform(void* data, DType dtype, size_t count, float amplitude, uint64_t seed, cudaStream_t stream);

}  // namespace kascade::bench
