// The CUDA backend's attention override on the host (host_attention.h).
#include "host_attention.h"

#include <cmath>

#include "common/cuda_check.h"
#include "kascade/error.h"
#include "kascade/tensor.h"

namespace kascade::engine::cuda {

void widen_to_head_major(const uint16_t* row_major, int rows, int heads, int d, float* head_major) {
  const size_t dd = static_cast<size_t>(d);
  for (int r = 0; r < rows; ++r) {
    for (int h = 0; h < heads; ++h) {
      const uint16_t* src = row_major + (static_cast<size_t>(r) * heads + h) * dd;
      float* dst = head_major + (static_cast<size_t>(h) * rows + r) * dd;
      for (size_t i = 0; i < dd; ++i) dst[i] = bf16_to_float(src[i]);
    }
  }
}

void narrow_to_row_major(const float* head_major, int rows, int heads, int d, int layer, uint16_t* row_major) {
  const size_t dd = static_cast<size_t>(d);
  for (int h = 0; h < heads; ++h) {
    for (int r = 0; r < rows; ++r) {
      const float* src = head_major + (static_cast<size_t>(h) * rows + r) * dd;
      uint16_t* dst = row_major + (static_cast<size_t>(r) * heads + h) * dd;
      for (size_t i = 0; i < dd; ++i) {
        KASCADE_CHECK(std::isfinite(src[i]), "attention override of layer " << layer << " returned " << src[i]
                                                                            << " for head " << h << ", query row " << r);
        dst[i] = float_to_bf16(src[i]);
      }
    }
  }
}

double HostAttention::run(const AttentionOverride& attention, int layer, int first, int tokens,
                          const AttentionShape& shape, const __nv_bfloat16* q, const __nv_bfloat16* k_cache,
                          const __nv_bfloat16* v_cache, __nv_bfloat16* out, cudaStream_t stream) {
  const int n = first + tokens, d = shape.head_dim;
  const size_t q_elems = static_cast<size_t>(tokens) * shape.hq * d;
  const size_t kv_elems = static_cast<size_t>(n) * shape.hkv * d;
  raw_q_.resize(q_elems);
  raw_k_.resize(kv_elems);
  raw_v_.resize(kv_elems);
  KASCADE_CUDA_CHECK(cudaMemcpyAsync(raw_q_.data(), q, q_elems * 2, cudaMemcpyDeviceToHost, stream));
  KASCADE_CUDA_CHECK(cudaMemcpyAsync(raw_k_.data(), k_cache, kv_elems * 2, cudaMemcpyDeviceToHost, stream));
  KASCADE_CUDA_CHECK(cudaMemcpyAsync(raw_v_.data(), v_cache, kv_elems * 2, cudaMemcpyDeviceToHost, stream));
  KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream));
  q_.resize(q_elems);
  k_.resize(kv_elems);
  v_.resize(kv_elems);
  out_.assign(q_elems, 0.f);
  widen_to_head_major(raw_q_.data(), tokens, shape.hq, d, q_.data());
  widen_to_head_major(raw_k_.data(), n, shape.hkv, d, k_.data());
  widen_to_head_major(raw_v_.data(), n, shape.hkv, d, v_.data());
  const LayerAttentionCall call{layer, first, tokens, shape.hq, shape.hkv, d, q_.data(), k_.data(), v_.data(),
                                out_.data()};
  const double keys = attention(call);
  raw_out_.resize(q_elems);
  narrow_to_row_major(out_.data(), tokens, shape.hq, d, layer, raw_out_.data());
  KASCADE_CUDA_CHECK(cudaMemcpyAsync(out, raw_out_.data(), q_elems * 2, cudaMemcpyHostToDevice, stream));
  // raw_out_ is pageable host memory that the next call reuses: the copy must finish first.
  KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream));
  return keys;
}

}  // namespace kascade::engine::cuda
