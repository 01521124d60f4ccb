// Prefill attention and pooled-mass kernels for bf16 storage, head dim 64 (one unit per pair).
#include "../prefill_kernels.cuh"

KASCADE_INSTANTIATE_PREFILL(__nv_bfloat16, 64)
