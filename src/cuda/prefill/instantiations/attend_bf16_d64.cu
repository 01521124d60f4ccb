// Prefill attention kernels (dense, LSE-only, sparse) for bf16 storage, head dim 64.
#include "../prefill_attend.cuh"

KASCADE_INSTANTIATE_PREFILL_ATTEND(__nv_bfloat16, 64)
