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
#pragma once

#include <cstdint>

#include "kascade/tensor.h"

namespace kascade {

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
