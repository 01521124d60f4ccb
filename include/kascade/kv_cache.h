// kascade/kv_cache.h — the KV-cache layout every attention implementation reads.
//
// One layer's cache is a pool of pages of `page_size` tokens. K and V are separate pools with
// element strides, so both the split layout [num_pages, P, Hkv, D] x 2 and the interleaved
// layout [num_pages, 2, P, Hkv, D] (v = k + P*Hkv*D, page_stride = 2*P*Hkv*D) are described.
// A ragged batch: sequence b owns pages page_indices[page_indptr[b] .. page_indptr[b+1]) in
// order, and holds seq_lens[b] tokens (positions 0..seq_lens[b]-1). A contiguous cache
// [B, n, Hkv, D] is the special case page_size = n, one page per sequence.
//
// Pointers are host pointers for the CPU oracle and device pointers for the CUDA kernels.
// Element (b, pos, h, d) of K lives at
//   k[page * page_stride + (pos % P) * token_stride + h * head_stride + d]
//   with page = page_indices[page_indptr[b] + pos / P].
//
// FP8 caches (dtype F8E4M3, the e4m3 layout vLLM and FlashInfer store) carry one float scale
// per kv head for K and one for V (one layer's cache: the scales of that layer), shared by the
// batch or one set per sequence (scale_seq_stride). The value of
// an element is dequantize_e4m3(code, scale) = e4m3 value * scale, so a kernel can keep K and V
// in e4m3 all the way into its dot products and fold the scales once per head:
//   s = (q . k_e4m3) * (softmax_scale * key_scale(b, h)),   out = (sum p * v_e4m3) * value_scale(b, h).
#pragma once

#include <cstdint>

#include "kascade/tensor.h"

namespace kascade {

// The one dequantisation of an FP8 cache element (the oracle, the CPU engine and the GPU
// suite's inputs all go through it): the e4m3 value times its kv head's scale, in fp32.
inline float dequantize_e4m3(uint8_t code, float scale) { return e4m3_to_float(code) * scale; }

struct PagedKV {
  const void* k = nullptr;             // [num_pages, P, Hkv, D] (strided)
  const void* v = nullptr;             // [num_pages, P, Hkv, D] (strided)
  DType dtype = DType::BF16;
  int batch = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int page_size = 16;
  int64_t page_stride = 0;             // elements between pages
  int64_t token_stride = 0;            // elements between tokens of a page
  int64_t head_stride = 0;             // elements between kv heads of a token
  const int32_t* page_indptr = nullptr;   // [batch + 1]
  const int32_t* page_indices = nullptr;  // [page_indptr[batch]]
  const int32_t* seq_lens = nullptr;      // [batch]
  // F8E4M3 only (required then, ignored for other dtypes): element (b, pos, h, d) of K is
  // dequantize_e4m3(k code, key_scale(b, h)), of V likewise with value_scale(b, h). Finite and
  // positive. One set of scales for the whole batch (scale_seq_stride 0, vLLM's per-layer scales)
  // or one set per sequence (scale_seq_stride >= num_kv_heads, as the CPU engine keeps them).
  const float* k_scale = nullptr;         // [num_kv_heads] or [batch, scale_seq_stride]
  const float* v_scale = nullptr;         // likewise
  int64_t scale_seq_stride = 0;           // floats between two sequences' scales; 0: shared

  float key_scale(int b, int h) const { return k_scale[b * scale_seq_stride + h]; }
  float value_scale(int b, int h) const { return v_scale[b * scale_seq_stride + h]; }

  // Strides of the split, densely packed layout [num_pages, P, Hkv, D].
  void set_packed_strides() {
    head_stride = head_dim;
    token_stride = static_cast<int64_t>(num_kv_heads) * head_dim;
    page_stride = token_stride * page_size;
  }
  // Host-only: element offset of (b, pos, h, 0) in the K (or V) pool.
  int64_t offset(int b, int64_t pos, int h) const {
    const int64_t page = page_indices[page_indptr[b] + pos / page_size];
    return page * page_stride + (pos % page_size) * token_stride + h * head_stride;
  }
};

}  // namespace kascade
