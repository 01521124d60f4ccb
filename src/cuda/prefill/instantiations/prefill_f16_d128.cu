// Prefill attention and pooled-mass kernels for f16 storage, head dim 128 (one unit per pair).
#include "../prefill_kernels.cuh"

KASCADE_INSTANTIATE_PREFILL(__half, 128)
