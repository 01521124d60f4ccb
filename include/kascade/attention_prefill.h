// kascade/attention_prefill.h — the CUDA prefill entry points (SPEC 5): dense causal, anchor
// (exact row LSE, tile-pooled post-softmax mass, per-tile top-k, sparse attention), layer 0
// (dense output plus selections) and reuse (sparse attention through a head map).
//
// Inputs are a ragged batch: queries q [total_q, Hq, D] with q_indptr [B + 1] on the device and
// a paged KV cache (kv_cache.h) that already holds keys 0..p1-1 of every sequence
// (p1 = kv.seq_lens[b]). The queries of sequence b are its last nq_b = q_indptr[b+1] - q_indptr[b]
// positions, so p0 = p1 - nq_b (chunked prefill; p0 = 0 for a fresh prompt). Query tiles of
// SparsityParams::tile positions (16, 32 or 64) are aligned at p0; tile tau starts at
// b = p0 + tau * T and its candidates are keys 0..b-1.
//
// Calls allocate nothing and never synchronise with the host: grid sizes, the selection shape
// and the workspace size come from host copies of q_indptr and seq_lens (PrefillBatch), which
// an engine has anyway. They must equal the device arrays; the kernels trust them.
//
//   kascade::PrefillArgs a;  a.q = q; a.q_indptr = q_indptr_dev; a.num_q_heads = 32;
//   a.kv = paged_kv; a.out = out; a.host = {batch, q_indptr_host, seq_lens_host};
//   kascade::SelectionShape ss = kascade::prefill_selection_shape(a.host, 8, sp);
//   // allocate ss.indices_count() int32 indices and ss.counts_count() int32 counts, then:
//   size_t ws = kascade::prefill_workspace_size(a, sp, kascade::Role::Anchor);
//   kascade::prefill_anchor(a, sp, /*dense_output=*/true, sel, ws_ptr, ws, stream);  // layer 0
//   kascade::prefill_reuse(a_next_layer, sp, sel, head_map_dev, stream);
//
// Selections: indices [B, S, max_tiles, k_max] int32 key positions (ascending, padded with -1)
// and counts [B, S, max_tiles]; S = Hkv for group pooling, 1 for all-heads pooling. Tiles past
// a sequence's last tile have count 0.
//
// Workspace (anchor only; dense and reuse need none): the exact row LSE [total_q, Hq] fp32 plus
// the pooled mass of a chunk of tiles [B, chunk, S, max_p1] fp32, where chunk is the largest tile
// count that keeps this buffer under kPrefillMassBudgetBytes (at least one tile). The bound is
// total_q * Hq * 4 + max(kPrefillMassBudgetBytes, B * S * max_p1 * 4) bytes plus alignment:
// 16 MiB + 256 MiB at 128k tokens for Hq 32 / Hkv 8.
//
// Supported: bf16 and fp16, head dim 64 and 128, Hq % Hkv == 0 with G = Hq / Hkv <= 8, tiles
// 16/32/64, any page size; rows of q, k, v must be 16-byte aligned (head strides multiple of 8);
// batch x Hkv <= 65535; a K/V pool of fewer than 2^31 tokens (pages x page size).
// Errors (unsupported shape, inconsistent batch, a buffer too small) throw kascade::Error.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kascade/kv_cache.h"
#include "kascade/types.h"

struct CUstream_st;  // cudaStream_t without pulling the CUDA headers into every includer

namespace kascade {

constexpr size_t kPrefillMassBudgetBytes = size_t{256} << 20;

// Host copies of the batch geometry (same values as the device q_indptr and kv.seq_lens).
struct PrefillBatch {
  int batch = 0;
  const int32_t* q_indptr_host = nullptr;  // [batch + 1]
  const int32_t* seq_lens_host = nullptr;  // [batch]: p1 of each sequence
};

struct PrefillArgs {
  const void* q = nullptr;            // device [total_q, Hq, D], dtype kv.dtype
  const int32_t* q_indptr = nullptr;  // device [batch + 1]
  int num_q_heads = 0;
  PagedKV kv;                         // device pointers; kv.batch must equal host.batch
  void* out = nullptr;                // device [total_q, Hq, D], dtype kv.dtype
  PrefillBatch host;
};

// Shape of the selection buffer an anchor call writes and reuse calls read.
struct SelectionShape {
  int num_selections = 0;  // S
  int max_tiles = 0;
  int k_max = 0;
  int batch = 0;
  int64_t indices_count() const { return int64_t{batch} * num_selections * max_tiles * k_max; }
  int64_t counts_count() const { return int64_t{batch} * num_selections * max_tiles; }
};

struct SelectionBuffer {
  int32_t* indices = nullptr;  // device [batch, S, max_tiles, k_max]
  int32_t* counts = nullptr;   // device [batch, S, max_tiles]
  SelectionShape shape;
};

// Selection shape for this batch: max_tiles and k_max are the largest over its sequences.
SelectionShape prefill_selection_shape(const PrefillBatch& batch, int num_kv_heads, const SparsityParams& sp);

// Bytes of workspace a call with this role needs (0 for Dense and Reuse).
size_t prefill_workspace_size(const PrefillArgs& args, const SparsityParams& sp, Role role);

// Dense causal attention: out[t] attends to keys 0..t.
void prefill_dense(const PrefillArgs& args, const SparsityParams& sp, CUstream_st* stream);

// Anchor: writes the per-tile selections and the output. With dense_output (layer 0) the output
// is dense causal attention; otherwise it is the sparse attention over each tile's selection
// plus its causal diagonal.
void prefill_anchor(const PrefillArgs& args, const SparsityParams& sp, bool dense_output,
                    const SelectionBuffer& selection, void* workspace, size_t workspace_bytes,
                    CUstream_st* stream);

// Reuse: kv head g of this layer attends to the anchor's selection head_map[g] of each tile plus
// the tile's causal diagonal. head_map: device [Hkv] (nullptr = identity); ignored when the
// selection has S = 1 (all-heads pooling). The batch geometry and tile must be the anchor's.
void prefill_reuse(const PrefillArgs& args, const SparsityParams& sp, const SelectionBuffer& selection,
                   const int32_t* head_map, CUstream_st* stream);

}  // namespace kascade
