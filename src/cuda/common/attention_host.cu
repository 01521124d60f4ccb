// src/cuda/common/attention_host.cu — the host code of attention_host.h.
#include "attention_host.h"

#include "workspace_layout.h"

namespace kascade::cuda {

namespace {
constexpr int kMaxGqaGroup = 8;  // decode_params.h kMaxGroupCap; prefill's CTA rows hold 8 heads too
}  // namespace

Selection selection_geometry(int batch, int num_kv_heads, int max_tiles, int64_t k_max, const SparsityParams& sp) {
  Selection s;
  s.batch = batch;
  s.num_sets = sp.pooling == Pooling::All ? 1 : num_kv_heads;
  s.max_tiles = max_tiles;
  s.k_max = k_max;
  return s;
}

const char* unsupported_heads(DType dtype, int head_dim, int num_q_heads, int num_kv_heads) {
  if (head_dim != 64 && head_dim != 128) return "head dim must be 64 or 128";
  if (dtype != DType::BF16 && dtype != DType::F16) return "dtype must be bf16 or f16";
  if (num_kv_heads <= 0 || num_q_heads <= 0 || num_q_heads % num_kv_heads != 0) {
    return "query heads must be a positive multiple of kv heads";
  }
  if (num_q_heads / num_kv_heads > kMaxGqaGroup) return "GQA group larger than 8";
  return nullptr;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

void check_paged_kv(const PagedKV& kv, DType dtype, int batch, int num_kv_heads, int head_dim, const char* call) {
  KASCADE_CHECK(kv.dtype == dtype && kv.batch == batch && kv.num_kv_heads == num_kv_heads && kv.head_dim == head_dim,
                call << ": the KV cache (" << dtype_name(kv.dtype) << ", batch " << kv.batch << ", " << kv.num_kv_heads
                     << " kv heads, dim " << kv.head_dim << ") does not match the shape (" << dtype_name(dtype)
                     << ", batch " << batch << ", " << num_kv_heads << ", dim " << head_dim << ")");
  KASCADE_CHECK(kv.page_size > 0, call << ": page size must be positive, got " << kv.page_size);
  // 16-byte row loads need 8-element aligned strides.
  KASCADE_CHECK(kv.head_stride % 8 == 0 && kv.token_stride % 8 == 0 && kv.page_stride % 8 == 0,
                call << ": KV strides must be multiples of 8 elements (16-byte rows), got page " << kv.page_stride
                     << ", token " << kv.token_stride << ", head " << kv.head_stride);
  if (batch == 0) return;
  KASCADE_CHECK(kv.k != nullptr && kv.v != nullptr && kv.page_indptr != nullptr && kv.page_indices != nullptr &&
                    kv.seq_lens != nullptr,
                call << ": the KV cache needs k, v, page_indptr, page_indices and seq_lens");
  KASCADE_CHECK(aligned16(kv.k) && aligned16(kv.v), call << ": k and v must be 16-byte aligned");
}

void check_selection(const Selection& selection, const Selection& want, const char* call) {
  const Selection& got = selection;
  KASCADE_CHECK(got.batch == want.batch && got.num_sets == want.num_sets && got.max_tiles == want.max_tiles &&
                    got.k_max == want.k_max,
                call << ": selection buffer shape [" << got.batch << ", " << got.num_sets << ", " << got.max_tiles
                     << ", " << got.k_max << "] does not match this call's [" << want.batch << ", " << want.num_sets
                     << ", " << want.max_tiles << ", " << want.k_max << "]");
  KASCADE_CHECK(want.counts_count() == 0 || got.counts != nullptr, call << ": selection counts pointer is null");
  KASCADE_CHECK(want.indices_count() == 0 || got.indices != nullptr, call << ": selection indices pointer is null");
}

void check_workspace(const Workspace& ws, size_t need, const char* call, const char* size_query) {
  KASCADE_CHECK(ws.bytes >= need,
                call << ": workspace of " << ws.bytes << " bytes is too small, " << size_query << " says " << need);
  if (need == 0) return;
  KASCADE_CHECK(ws.data != nullptr && reinterpret_cast<uintptr_t>(ws.data) % kWorkspaceAlignment == 0,
                call << ": workspace must be non-null and " << kWorkspaceAlignment << "-byte aligned");
}

}  // namespace kascade::cuda
