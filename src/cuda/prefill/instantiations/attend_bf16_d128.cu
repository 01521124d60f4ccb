// Prefill attention kernels (dense, LSE-only, sparse) for bf16 storage, head dim 128.
#include "../prefill_attend.cuh"

KASCADE_INSTANTIATE_PREFILL_ATTEND(__nv_bfloat16, 128)
