// kascade/attention.h — the public GPU attention API (decode; prefill lives in attention_prefill.h).
//
// One entry point per kascade::Role (types.h), all over a paged KV cache (kascade::PagedKV, device
// pointers):
//   dense   exact attention (split-KV flash-decoding + combine);
//   layer0  dense output plus the selection its reuse layers read (SPEC 4, layer 0);
//   anchor  exact pooled post-softmax probabilities -> GPU top-k -> attention over the selection;
//   reuse   attention over an anchor's selection, read through the head map.
// Calls allocate nothing and never synchronise with the host, so a sequence of them can be captured
// in a CUDA graph and replayed with new sequence lengths and page tables (everything that varies per
// step is read from device memory). Shapes that fix grid sizes come from DecodeShape, whose
// `max_seq_len` bounds every seq_lens[b] (a precondition: larger lengths are clamped by the kernels).
//
//   kascade::DecodeShape shape{batch, hq, hkv, head_dim, kascade::DType::BF16, max_len};
//   size_t ws_bytes = kascade::decode_workspace_size(shape, kascade::Role::Anchor, sparsity);
//   kascade::DecodeSelection sel = {sel_ptr, counts_ptr, kascade::decode_selection_sets(shape, sparsity),
//                                   kascade::decode_selection_kmax(shape, sparsity)};
//   kascade::decode_anchor({q, out, kv, hq}, sparsity, sel, {ws, ws_bytes}, stream);
//   kascade::decode_reuse({q2, out2, kv2, hq}, sparsity, sel, head_map, {ws, ws_bytes}, stream);
//
// Selection buffer (DESIGN): indices [batch, S, 1, k_max] int32 key positions, ascending, padded with
// -1 past counts[b * S + s]; S = Hkv (group pooling) or 1 (all-heads pooling). The budget k(n) is
// kascade::budget_k on the device with the call's SparsityParams, so k_max = budget_k(max_seq_len).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kascade/kv_cache.h"
#include "kascade/tensor.h"
#include "kascade/types.h"

#if defined(KASCADE_HAVE_CUDA)
#include <cuda_runtime_api.h>
#else
struct CUstream_st;
typedef CUstream_st* cudaStream_t;
#endif

namespace kascade {

// What fixes grid and buffer sizes of a decode call (host values; per-step lengths stay on device).
struct DecodeShape {
  int batch = 0;
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  DType dtype = DType::BF16;
  int64_t max_seq_len = 0;  // upper bound of every seq_lens[b] over the calls that share buffers
};

// Per-call tensors. q and out are contiguous [batch, num_q_heads, head_dim] in kv.dtype.
struct DecodeTensors {
  const void* q = nullptr;  // [B, Hq, D]
  void* out = nullptr;      // [B, Hq, D]
  PagedKV kv;               // device pointers; kv.seq_lens[b] = n, the context including the new token
  int num_q_heads = 0;
};

// The device selection buffer an anchor (or layer 0) writes and its reuse layers read.
struct DecodeSelection {
  int32_t* indices = nullptr;  // [batch, num_sets, 1, k_max] key positions, ascending, -1 padded
  int32_t* counts = nullptr;   // [batch, num_sets] selected keys per set
  int num_sets = 0;            // Hkv (Pooling::Group) or 1 (Pooling::All)
  int64_t k_max = 0;           // budget_k(max_seq_len, rho, k_min, k_multiple)
};

// Caller-owned device scratch memory.
struct Workspace {
  void* data = nullptr;
  size_t bytes = 0;
};

// Number of selection sets and the selection buffer's last axis for this shape and policy.
int decode_selection_sets(const DecodeShape& shape, const SparsityParams& sparsity);
int64_t decode_selection_kmax(const DecodeShape& shape, const SparsityParams& sparsity);

// Bytes of workspace one call of `role` needs (queries the current device's multiprocessor count).
size_t decode_workspace_size(const DecodeShape& shape, Role role, const SparsityParams& sparsity);

// Whether this build has kernels for the shape; `why` (optional) receives the reason if not.
bool decode_supports(const DecodeShape& shape, const char** why = nullptr);

// Exact attention: out[b, h] = softmax(q k^T * scale) v over keys 0..n-1 (scale from sparsity).
void decode_dense(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity,
                  Workspace ws, cudaStream_t stream);

// Dense output plus the selection of every set (SPEC 4 steps 1-3) into `selection`.
void decode_layer0(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity,
                   const DecodeSelection& selection, Workspace ws, cudaStream_t stream);

// Selection as layer0, then attention of every head restricted to its group's (or the shared) set.
void decode_anchor(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity,
                   const DecodeSelection& selection, Workspace ws, cudaStream_t stream);

// Attention of the heads of kv head g over set head_map[g] of `selection` (an anchor's output).
// head_map: device [num_kv_heads] int32 in [0, num_kv_heads), or nullptr for the identity; ignored
// with Pooling::All. Device contents are not checked on the host (that would need a sync): an
// out-of-range map entry gives its heads an empty key set (zero output), and selection entries
// outside [0, n) are skipped, never read out of bounds. Plans are validated when loaded.
void decode_reuse(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity,
                  const DecodeSelection& selection, const int32_t* head_map, Workspace ws,
                  cudaStream_t stream);

}  // namespace kascade

#if __has_include("kascade/attention_prefill.h")
#include "kascade/attention_prefill.h"
#endif
