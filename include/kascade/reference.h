// kascade/reference.h — the CPU reference oracle: SPEC sections 3-5 computed literally.
//
// Every other implementation (CUDA kernels, engine, calibration) is tested against this code,
// so it is plain loops with no cleverness. One call of attend() is one attention call of one
// layer for one sequence, exactly as SPEC 9 describes (`kascade reference CASE_DIR OUT_DIR`):
//
//   kascade::ref::Call call;                       // phase, role, sparsity params, p0, head map
//   call.phase = kascade::Phase::Prefill;
//   call.role = kascade::Role::Anchor;
//   call.p0 = n - nq;                              // must equal n - nq (chunked prefill)
//   kascade::ref::Result r = kascade::ref::attend(call, q, k, v, hq, hkv, nq, n, d);
//   // r.out [Hq, nq, D]; r.selection [S, tiles, k_max] for the reuse layers
//   call.role = kascade::Role::Reuse;
//   kascade::ref::Result r2 = kascade::ref::attend(call, q2, k2, v2, hq, hkv, nq, n, d, &r.selection);
//
// Precision: inputs are fp32 values (bf16/f16 caches are widened exactly with round_to(), f8e4m3
// caches dequantised with their kv head's scale by dequantize_e4m3(), kascade/kv_cache.h).
// Scores q.k * scale, the max-subtracted softmax, the pooled masses and the output sums are
// all accumulated in fp64 (it costs nothing here); the output is rounded to fp32 once.
// `scale` is SparsityParams::scale_for(D) (an fp32 value) widened to fp64.
//
// Semantics fixed here where SPEC leaves a detail open:
// - Top-k ties break toward the lower key index (a stable order on (mass desc, index asc)).
// - Decode is one tile whose candidates are all keys 0..n-1 (the query sits at n-1); its
//   budget is k(n) in both budget modes. Prefill tile tau starts at b = p0 + tau * T, its
//   candidates are keys < b, its diagonal keys b..t are always attended.
// - Role::Layer0 returns dense causal attention AND the selection an anchor would make (SPEC 9's
//   case.json calls this role "dense"); Role::Dense returns the dense attention only.
// - Pooling::All: one selection (num_sets = 1) pooled over all Hq heads, shared by every kv
//   head; a reuse call then ignores head_map.
// - A query whose key set is empty (decode with k = 0, or a reused selection with 0 entries)
//   gets an all-zero output row (the convention of FlashInfer/FlashMLA), never NaN.
// - Non-finite q/k/v values are rejected with kascade::Error (no NaN is ever produced).
// - Heads (selection sets, kv heads) are processed in parallel with std::thread; every sum has a
//   fixed order, so results are bitwise identical for any thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kascade/kv_cache.h"
#include "kascade/tensor.h"
#include "kascade/types.h"

namespace kascade::ref {

// SPEC 9 select.npy: [num_sets, num_tiles, k_max] int32 key positions, each row ascending and
// padded with -1 after its `count` valid entries. num_sets = Hkv (pooling group) or 1 (all).
struct Selection {
  int num_sets = 0;
  int num_tiles = 0;
  int k_max = 0;
  std::vector<int32_t> index;  // [num_sets, num_tiles, k_max]
  std::vector<int32_t> count;  // [num_sets, num_tiles]

  // An all-padding selection of the given shape (index -1, count 0).
  static Selection empty(int num_sets, int num_tiles, int k_max);
  const int32_t* row(int set, int tau) const {
    return index.data() + (static_cast<size_t>(set) * num_tiles + tau) * k_max;
  }
  int32_t* row(int set, int tau) { return index.data() + (static_cast<size_t>(set) * num_tiles + tau) * k_max; }
  int row_count(int set, int tau) const { return count[static_cast<size_t>(set) * num_tiles + tau]; }
};

// One attention call (SPEC 9 case.json). head_map: reuse only, one source kv head (set) per kv
// head; empty means identity; ignored with Pooling::All. p0: prefill only, must equal n - nq.
struct Call {
  Phase phase = Phase::Decode;
  Role role = Role::Dense;
  SparsityParams params;
  int p0 = 0;
  std::vector<int> head_map;
};

struct Result {
  std::vector<float> out;  // [Hq, nq, D]
  Selection selection;     // Layer0 and Anchor roles; empty (num_sets = 0) for Dense and Reuse
};

// The one entry point. q [Hq, nq, D], k/v [Hkv, n, D] fp32 contiguous (SPEC 9 shapes).
// Decode: nq = 1, the query at position n-1. Prefill: queries at positions p0..n-1.
// reuse: required for Role::Reuse (the anchor's selection, validated against this call's shape
// and budgets), must be null otherwise. Throws kascade::Error on any inconsistency.
Result attend(const Call& call, const float* q, const float* k, const float* v, int hq, int hkv, int nq, int n,
              int d, const Selection* reuse = nullptr);

// Number of selection sets (Hkv, or 1 with Pooling::All) and tiles (decode: 1) of a call.
int num_selection_sets(const Call& call, int hkv);
int num_query_tiles(const Call& call, int nq, int n);
// The budget k of tile tau (decode: k(n)), through kascade/budget.h.
int tile_budget(const Call& call, int tau, int n);
// First candidate-excluded position b of tile tau: candidates are keys < b (decode: b = n).
int tile_prefix(const Call& call, int tau, int n);

// Throws kascade::Error unless `sel` is a valid selection for this call: shape [S, tiles, *],
// each row `count` strictly ascending candidate indices (< b of its tile) then -1 padding,
// count <= the tile's budget, and the counts array agreeing with the padding.
void validate_selection(const Call& call, const Selection& sel, int hkv, int nq, int n);

// The pooled post-softmax masses the anchor ranks (SPEC 4 step 2 / SPEC 5 step 2).
struct Pooled {
  int num_sets = 0, num_tiles = 0, n = 0;
  std::vector<double> mass;      // [sets, tiles, n]; 0 for keys that are not candidates of the tile
  std::vector<double> diagonal;  // [sets, tiles]; prefill diagonal-tile mass (keys b..t), 0 in decode
  std::vector<int> prefix;       // [tiles]; b of each tile: its candidates are keys < b (decode: n)
  const double* tile_mass(int set, int tau) const {
    return mass.data() + (static_cast<size_t>(set) * num_tiles + tau) * n;
  }
  double tile_diagonal(int set, int tau) const { return diagonal[static_cast<size_t>(set) * num_tiles + tau]; }
};
Pooled pooled_mass(const Call& call, const float* q, const float* k, int hq, int hkv, int nq, int n, int d);

// Sum of the pooled mass of keys idx[0..count) plus the tile's diagonal mass (SPEC 6/7).
double covered_mass(const Pooled& pooled, int set, int tau, const int32_t* idx, int count);

// SPEC 7 equivalence: for every (set, tile) the counts are equal and the covered masses differ
// by at most 1e-3 of the larger. `actual` must also be well formed (in-range, strictly ascending
// candidates, -1 padding). Returns "" when equivalent, else a message naming the first
// differing (set, tile) and both masses.
std::string compare_selections(const Pooled& pooled, const Selection& expected, const Selection& actual);

// ---- numeric comparison (SPEC 7 tolerances) -----------------------------------------------
// ||actual - reference||_2 / ||reference||_2 in fp64 (the plain difference norm when the
// reference is all zeros). +infinity when either array holds a NaN or Inf: NaN never passes.
double relative_l2_error(const float* reference, const float* actual, size_t count);
// SPEC 7 output tolerance by storage type: bf16 1e-2, f16 2e-3, f32 1e-5.
double output_tolerance(DType storage);
// "" when relative_l2_error <= tolerance and every value is finite; else a message naming the
// first non-finite position or the error and the tolerance. `what` names the compared tensor.
std::string check_close(const char* what, const float* reference, const float* actual, size_t count,
                        double tolerance);

// ---- batch entry points over the GPU's KV layouts -----------------------------------------
// kv: host pointers, f32/f16/bf16 storage (widened exactly), any page size / page order /
// split or interleaved layout (kascade/kv_cache.h). Each sequence b is gathered into
// [Hkv, n_b, D] fp32 and passed to attend(). call.p0 must be 0: each sequence's p0 is derived.
struct BatchResult {
  std::vector<float> out;               // decode [B, Hq, D]; prefill [total_q, Hq, D]
  std::vector<Selection> selections;    // one per sequence (Layer0 and Anchor roles)
};

// Sequence b's keys and values as [Hkv, n_b, D] fp32 (n_b = kv.seq_lens[b]).
void gather_sequence(const PagedKV& kv, int b, std::vector<float>& k_out, std::vector<float>& v_out);

// Decode: q [B, Hq, D], one query per sequence at position seq_lens[b] - 1.
// reuse: one Selection per sequence (Role::Reuse only).
BatchResult decode_batch(const Call& call, const float* q, int hq, const PagedKV& kv,
                         const std::vector<Selection>* reuse = nullptr);

// Ragged prefill: q [total_q, Hq, D] with q_indptr [B+1]; sequence b's queries are its last
// nq_b = q_indptr[b+1] - q_indptr[b] positions, so p0_b = seq_lens[b] - nq_b (chunked prefill).
BatchResult prefill_batch(const Call& call, const float* q, const int32_t* q_indptr, int hq, const PagedKV& kv,
                          const std::vector<Selection>* reuse = nullptr);

}  // namespace kascade::ref
