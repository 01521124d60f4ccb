// Decode split kernels for bf16 storage, head dim 64 (one translation unit per pair keeps builds parallel).
#include "../decode_split_kernel.cuh"

namespace kascade::cuda {
KASCADE_INSTANTIATE_DECODE_SPLIT(__nv_bfloat16, 64)
}  // namespace kascade::cuda
