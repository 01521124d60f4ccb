// Prefill attention kernels (dense, LSE-only, sparse) for f16 storage, head dim 64.
#include "../prefill_attend.cuh"

KASCADE_INSTANTIATE_PREFILL_ATTEND(__half, 64)
