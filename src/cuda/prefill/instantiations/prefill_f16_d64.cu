// Prefill attention and pooled-mass kernels for f16 storage, head dim 64 (one unit per pair).
#include "../prefill_kernels.cuh"

KASCADE_INSTANTIATE_PREFILL(__half, 64)
