// Prefill pooled-mass kernel for bf16 storage, head dim 64.
#include "../prefill_mass.cuh"

KASCADE_INSTANTIATE_PREFILL_MASS(__nv_bfloat16, 64)
