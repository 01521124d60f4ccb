// src/cuda/common/attention_host.h — the host code decode and prefill calls share: the selection
// geometry, which heads have kernels, and the checks of a call's tensors against its shape, its
// selection against the geometry the call expects and its workspace against the call's size.
// Each failed check throws kascade::Error naming the call, before any launch.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kascade/attention.h"
#include "kascade/error.h"

namespace kascade::cuda {

// A selection buffer's geometry (indices and counts left null): one set per kv head, or one for
// all heads with Pooling::All.
Selection selection_geometry(int batch, int num_kv_heads, int max_tiles, int64_t k_max, const SparsityParams& sp);

// Why no kernel fits (nullptr: one does): storage type, head dim, heads and GQA group.
const char* unsupported_heads(DType dtype, int head_dim, int num_q_heads, int num_kv_heads);

// The KV cache of a call: its geometry equals the shape's, a positive page size, rows of 16 bytes
// (strides multiples of 8 elements) and, for a non-empty batch, every pointer set and K, V
// 16-byte aligned.
void check_paged_kv(const PagedKV& kv, DType dtype, int batch, int num_kv_heads, int head_dim, const char* call);

bool aligned16(const void* p);

// DecodeTensors / PrefillTensors against DecodeShape / PrefillShape.
template <typename Tensors, typename Shape>
void check_tensors(const Tensors& t, const Shape& s, const char* call) {
  KASCADE_CHECK(t.num_q_heads == s.num_q_heads,
                call << ": tensors have " << t.num_q_heads << " query heads, the shape " << s.num_q_heads);
  check_paged_kv(t.kv, s.dtype, s.batch, s.num_kv_heads, s.head_dim, call);
  if (s.batch == 0) return;
  KASCADE_CHECK(t.q != nullptr && t.out != nullptr, call << ": q and out must be device pointers");
  KASCADE_CHECK(aligned16(t.q) && aligned16(t.out), call << ": q and out must be 16-byte aligned");
}

// `selection` must have the geometry the call expects (`want`, from <phase>_selection) and
// buffers wherever that geometry holds elements.
void check_selection(const Selection& selection, const Selection& want, const char* call);

// `ws` must hold `need` bytes (from `size_query`), from a kWorkspaceAlignment-aligned start.
void check_workspace(const Workspace& ws, size_t need, const char* call, const char* size_query);

}  // namespace kascade::cuda
