// kascade/attention.h — the public GPU attention API: the vocabulary both phases share (Selection,
// Workspace, the stream) and the decode calls; prefill (attention_prefill.h) speaks the same way.
//
// One entry point per kascade::Role (types.h) and phase, all over a paged KV cache
// (kascade::PagedKV, device pointers), all shaped alike:
//   <phase>_supports(shape, why)                    whether this build has kernels for the shape
//   <phase>_selection(shape, sparsity)              the selection buffer's geometry for the shape
//   <phase>_workspace_size(shape, role, sparsity)   device scratch bytes one call of `role` needs
//   <phase>_dense (tensors, shape, sparsity,                      workspace, stream)
//   <phase>_layer0(tensors, shape, sparsity, selection,           workspace, stream)
//   <phase>_anchor(tensors, shape, sparsity, selection,           workspace, stream)
//   <phase>_reuse (tensors, shape, sparsity, selection, head_map, workspace, stream)
// The roles: dense is exact attention; layer0 the dense output plus the selection its reuse layers
// read (SPEC 4, layer 0); anchor the exact pooled post-softmax probabilities -> GPU top-k ->
// attention over the selection; reuse attention over an anchor's selection, read through the head
// map. Calls allocate nothing and never synchronise with the host, so a sequence of them can be
// captured in a CUDA graph. The shape holds the host values that fix grid and buffer sizes; the
// decode shape's `max_seq_len` bounds every seq_lens[b] (a precondition: larger lengths are
// clamped by the kernels), so a decode graph replays with new lengths and page tables.
//
//   kascade::DecodeShape shape{batch, hq, hkv, head_dim, kascade::DType::BF16, max_len};
//   size_t ws_bytes = kascade::decode_workspace_size(shape, kascade::Role::Anchor, sparsity);
//   kascade::Selection sel = kascade::decode_selection(shape, sparsity);
//   sel.indices = indices_ptr;  // device int32 [sel.indices_count()]
//   sel.counts = counts_ptr;    // device int32 [sel.counts_count()]
//   kascade::decode_anchor({q, out, kv, hq}, shape, sparsity, sel, {ws, ws_bytes}, stream);
//   kascade::decode_reuse({q2, out2, kv2, hq}, shape, sparsity, sel, head_map, {ws, ws_bytes}, stream);
//
// Selection buffer (DESIGN), the same in both phases: indices [batch, S, tiles, k_max] int32 key
// positions, ascending, padded with -1 past counts[(b * S + s) * tiles + tile]; S = Hkv (group
// pooling) or 1 (all-heads pooling); decode has one tile. The budget k(n) is kascade::budget_k on
// the device with the call's SparsityParams, so a decode selection has k_max = budget_k(max_seq_len).
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

// The device selection buffer an anchor (or layer 0) writes and its reuse layers read, with its
// geometry; <phase>_selection(shape, sparsity) gives the geometry a call expects.
struct Selection {
  int32_t* indices = nullptr;  // [batch, num_sets, max_tiles, k_max] key positions, ascending, -1 padded
  int32_t* counts = nullptr;   // [batch, num_sets, max_tiles] selected keys per (set, tile)
  int num_sets = 0;            // Hkv (Pooling::Group) or 1 (Pooling::All)
  int max_tiles = 0;           // query tiles per sequence: 1 in decode
  int64_t k_max = 0;           // decode: budget_k(max_seq_len); prefill: the largest tile budget
  int batch = 0;

  int64_t counts_count() const { return int64_t{batch} * num_sets * max_tiles; }
  int64_t indices_count() const { return counts_count() * k_max; }
};

// Caller-owned device scratch memory (cudaMalloc alignment).
struct Workspace {
  void* data = nullptr;
  size_t bytes = 0;
};

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

// Whether this build has kernels for the shape; `why` (optional) receives the reason if not.
bool decode_supports(const DecodeShape& shape, const char** why = nullptr);

// The selection buffer's geometry for this shape and policy (indices and counts left null).
Selection decode_selection(const DecodeShape& shape, const SparsityParams& sparsity);

// Bytes of workspace one call of `role` needs (queries the current device's multiprocessor count).
size_t decode_workspace_size(const DecodeShape& shape, Role role, const SparsityParams& sparsity);

// Exact attention: out[b, h] = softmax(q k^T * scale) v over keys 0..n-1 (scale from sparsity).
void decode_dense(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity,
                  Workspace ws, cudaStream_t stream);

// Dense output plus the selection of every set (SPEC 4 steps 1-3) into `selection`.
void decode_layer0(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity,
                   const Selection& selection, Workspace ws, cudaStream_t stream);

// Selection as layer0, then attention of every head restricted to its group's (or the shared) set.
void decode_anchor(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity,
                   const Selection& selection, Workspace ws, cudaStream_t stream);

// Attention of the heads of kv head g over set head_map[g] of `selection` (an anchor's output).
// head_map: device [num_kv_heads] int32 in [0, num_kv_heads), or nullptr for the identity; ignored
// with Pooling::All. Device contents are not checked on the host (that would need a sync): an
// out-of-range map entry gives its heads an empty key set (zero output), and selection entries
// outside [0, n) are skipped, never read out of bounds. Calibration plans are validated when loaded.
void decode_reuse(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity,
                  const Selection& selection, const int32_t* head_map, Workspace ws, cudaStream_t stream);

}  // namespace kascade
