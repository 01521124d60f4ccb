// Prefill pooled-mass kernel for f16 storage, head dim 128.
#include "../prefill_mass.cuh"

KASCADE_INSTANTIATE_PREFILL_MASS(__half, 128)
