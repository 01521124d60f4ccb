// kascade/attention_prefill.h — the CUDA prefill entry points (SPEC 5), shaped as the decode ones
// (attention.h): dense causal; layer 0 (dense output plus selections); anchor (exact row LSE,
// tile-pooled post-softmax mass, per-tile top-k, sparse attention); reuse (sparse attention
// through a head map).
//
// Inputs are a ragged batch: queries q [total_q, Hq, D] with q_indptr [B + 1] on the device and
// a paged KV cache (kv_cache.h) that already holds keys 0..p1-1 of every sequence
// (p1 = kv.seq_lens[b]). The queries of sequence b are its last nq_b = q_indptr[b+1] - q_indptr[b]
// positions, so p0 = p1 - nq_b (chunked prefill; p0 = 0 for a fresh prompt). Query tiles of
// SparsityParams::tile positions (16, 32 or 64) are aligned at p0; tile tau starts at
// b = p0 + tau * T and its candidates are keys 0..b-1.
//
// Calls allocate nothing and never synchronise with the host: grid sizes, the selection geometry
// and the workspace size come from the host copies of q_indptr and seq_lens in PrefillShape,
// which an engine has anyway. They must equal the device arrays; the kernels trust them.
//
//   kascade::PrefillShape shape{batch, 32, 8, 128, kascade::DType::BF16, q_indptr_host, seq_lens_host};
//   kascade::PrefillTensors t{q, out, paged_kv, 32, q_indptr_dev};
//   kascade::Selection sel = kascade::prefill_selection(shape, sp);
//   sel.indices = indices_ptr;  // device int32 [sel.indices_count()]
//   sel.counts = counts_ptr;    // device int32 [sel.counts_count()]
//   size_t ws_bytes = kascade::prefill_workspace_size(shape, kascade::Role::Layer0, sp);
//   kascade::prefill_layer0(t, shape, sp, sel, {ws, ws_bytes}, stream);
//   kascade::prefill_reuse(t_next_layer, shape, sp, sel, head_map_dev, {ws, ws_bytes}, stream);
//
// Selections (attention.h Selection): indices [B, S, max_tiles, k_max] int32 key positions
// (ascending, padded with -1) and counts [B, S, max_tiles]; S = Hkv for group pooling, 1 for
// all-heads pooling. Tiles past a sequence's last tile have count 0.
//
// Workspace (layer 0 and anchor; dense and reuse need none): the exact row LSE [total_q, Hq] fp32
// plus the pooled mass of a chunk of tiles [B, chunk, S, max_p1] fp32, where chunk is the largest
// tile count that keeps this buffer under kPrefillMassBudgetBytes (at least one tile). The bound
// is total_q * Hq * 4 + max(kPrefillMassBudgetBytes, B * S * max_p1 * 4) bytes plus alignment:
// 16 MiB + 256 MiB at 128k tokens for Hq 32 / Hkv 8.
//
// Supported: bf16 and fp16, head dim 64 and 128, Hq % Hkv == 0 with G = Hq / Hkv <= 8, tiles
// 16/32/64, any page size; rows of q, k, v must be 16-byte aligned (head strides multiple of 8);
// batch x Hkv <= 65535; a K/V pool of fewer than 2^31 tokens (pages x page size).
// Errors (unsupported shape, inconsistent batch, a buffer too small) throw kascade::Error.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kascade/attention.h"

namespace kascade {

constexpr size_t kPrefillMassBudgetBytes = size_t{256} << 20;

// What fixes grid and buffer sizes of a prefill call: the heads and the host copies of the batch
// geometry (the same values as the device q_indptr and kv.seq_lens).
struct PrefillShape {
  int batch = 0;
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  DType dtype = DType::BF16;
  const int32_t* q_indptr_host = nullptr;  // [batch + 1]
  const int32_t* seq_lens_host = nullptr;  // [batch]: p1 of each sequence
};

// Per-call tensors. q and out are contiguous [total_q, num_q_heads, head_dim] in kv.dtype.
struct PrefillTensors {
  const void* q = nullptr;            // [total_q, Hq, D]
  void* out = nullptr;                // [total_q, Hq, D]
  PagedKV kv;                         // device pointers; kv.seq_lens[b] = p1
  int num_q_heads = 0;
  const int32_t* q_indptr = nullptr;  // device [batch + 1]
};

// Whether this build has kernels for the shape; `why` (optional) receives the reason if not.
// The batch arrays and the tile are checked by the calls.
bool prefill_supports(const PrefillShape& shape, const char** why = nullptr);

// The selection buffer's geometry for this batch (max_tiles and k_max are the largest over its
// sequences; indices and counts left null).
Selection prefill_selection(const PrefillShape& shape, const SparsityParams& sparsity);

// Bytes of workspace one call of `role` needs (0 for Dense and Reuse).
size_t prefill_workspace_size(const PrefillShape& shape, Role role, const SparsityParams& sparsity);

// Dense causal attention: out[t] attends to keys 0..t.
void prefill_dense(const PrefillTensors& t, const PrefillShape& shape, const SparsityParams& sparsity,
                   Workspace ws, cudaStream_t stream);

// Dense causal output plus the per-tile selections (SPEC 5.5, layer 0).
void prefill_layer0(const PrefillTensors& t, const PrefillShape& shape, const SparsityParams& sparsity,
                    const Selection& selection, Workspace ws, cudaStream_t stream);

// The per-tile selections, then sparse attention over each tile's selection plus its causal
// diagonal.
void prefill_anchor(const PrefillTensors& t, const PrefillShape& shape, const SparsityParams& sparsity,
                    const Selection& selection, Workspace ws, cudaStream_t stream);

// Kv head g of this layer attends to the anchor's selection head_map[g] of each tile plus the
// tile's causal diagonal. head_map: device [Hkv] (nullptr = identity); ignored when the selection
// has S = 1 (all-heads pooling). The batch geometry and tile must be the anchor's.
void prefill_reuse(const PrefillTensors& t, const PrefillShape& shape, const SparsityParams& sparsity,
                   const Selection& selection, const int32_t* head_map, Workspace ws, cudaStream_t stream);

}  // namespace kascade
