// prefill_launch.cu — host side of the prefill family: argument checks, the batch geometry read
// from the host copies of q_indptr / seq_lens, workspace layout, and the launch sequence of
// each role (kernels are compiled in instantiations/*.cu and prefill_topk.cu).
//
// Anchor sequence (SPEC 5):
//   1. attend (dense keys 0..t)   -> exact row LSE (and the dense output for layer 0)
//   2. for each chunk of tiles:  pooled_mass (exp(s - lse) summed over the tile's rows, keys < b)
//                                 topk (radix select per (tile, selection)) -> selection buffer
//   3. attend (selection + causal diagonal) -> output (anchors other than layer 0)
// Reuse is step 3 with another layer's q/k/v and the head map.
#include <algorithm>
#include <type_traits>

#include "../common/cuda_check.h"
#include "kascade/attention_prefill.h"
#include "kascade/error.h"
#include "anchor_phases.h"
#include "prefill_params.h"

namespace kascade {
namespace {

using cuda::FastDivmod;
using cuda::prefill::AnchorPhase;
using cuda::prefill::AnchorPhaseObserver;
using cuda::prefill::AttendParams;
using cuda::prefill::KvView;
using cuda::prefill::MassParams;
using cuda::prefill::PrefillKernels;
using cuda::prefill::TopkParams;
using cuda::prefill::kBlockRows;
using cuda::prefill::kChunkElems;
using cuda::prefill::kKeysPerMassCta;

constexpr size_t kWorkspaceAlign = 256;
constexpr int kMaxGridY = 65535;  // also the limit of gridDim.z

size_t align_up(size_t x) { return (x + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign; }

// Per-batch sizes derived (and validated) from the host copies of the batch arrays.
struct BatchGeometry {
  int batch = 0;
  int64_t total_q = 0;
  int max_nq = 0;
  int max_p1 = 0;
  int max_tiles = 0;
  int k_max = 0;
};

void check_tile(int tile) {
  KASCADE_CHECK(tile == 16 || tile == 32 || tile == 64,
                "prefill: tile size " << tile << " is not supported (supported: 16, 32, 64)");
}

BatchGeometry inspect_batch(const PrefillBatch& host, const SparsityParams& sp) {
  KASCADE_CHECK(host.batch >= 0, "prefill: batch size must be non-negative, got " << host.batch);
  KASCADE_CHECK(host.batch == 0 || (host.q_indptr_host != nullptr && host.seq_lens_host != nullptr),
                "prefill: PrefillBatch needs host copies of q_indptr and seq_lens");
  check_tile(sp.tile);
  BatchGeometry g;
  g.batch = host.batch;
  if (host.batch == 0) return g;
  KASCADE_CHECK(host.q_indptr_host[0] == 0, "prefill: q_indptr[0] must be 0, got " << host.q_indptr_host[0]);
  for (int b = 0; b < host.batch; ++b) {
    const int nq = host.q_indptr_host[b + 1] - host.q_indptr_host[b];
    const int p1 = host.seq_lens_host[b];
    KASCADE_CHECK(nq >= 0, "prefill: q_indptr must be non-decreasing, sequence " << b << " has " << nq
                                                                                     << " queries");
    KASCADE_CHECK(p1 >= nq, "prefill: sequence " << b << " has " << nq << " queries but only " << p1
                                                 << " keys in the cache (seq_lens must count the new tokens)");
    const int p0 = p1 - nq;
    const int tiles = static_cast<int>(num_tiles(p0, p1, sp.tile));
    g.max_nq = std::max(g.max_nq, nq);
    g.max_p1 = std::max(g.max_p1, p1);
    g.max_tiles = std::max(g.max_tiles, tiles);
    g.k_max = std::max(g.k_max, static_cast<int>(max_tile_budget(sp.rolling(), p0, p1, sp.tile, sp.rho, sp.k_min,
                                                                 sp.k_multiple)));
  }
  g.total_q = host.q_indptr_host[host.batch];
  return g;
}

int num_selections(int num_kv_heads, const SparsityParams& sp) {
  return sp.pooling == Pooling::All ? 1 : num_kv_heads;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

void check_args(const PrefillArgs& a) {
  const PagedKV& kv = a.kv;
  KASCADE_CHECK(kv.dtype == DType::BF16 || kv.dtype == DType::F16,
                "prefill: dtype " << dtype_name(kv.dtype) << " is not supported (supported: bf16, f16)");
  KASCADE_CHECK(kv.head_dim == 64 || kv.head_dim == 128,
                "prefill: head dim " << kv.head_dim << " is not supported (supported: 64, 128)");
  KASCADE_CHECK(kv.num_kv_heads > 0 && a.num_q_heads > 0 && a.num_q_heads % kv.num_kv_heads == 0,
                "prefill: query heads " << a.num_q_heads << " must be a positive multiple of kv heads "
                                        << kv.num_kv_heads);
  const int group = a.num_q_heads / kv.num_kv_heads;
  KASCADE_CHECK(group <= 8, "prefill: GQA group " << group << " is not supported (at most 8)");
  KASCADE_CHECK(kv.batch == a.host.batch,
                "prefill: kv.batch " << kv.batch << " differs from PrefillBatch::batch " << a.host.batch);
  KASCADE_CHECK(kv.page_size > 0, "prefill: page size must be positive, got " << kv.page_size);
  // Grid y/z carry kv heads, sequences and (sequence, selection) pairs.
  KASCADE_CHECK(int64_t{a.host.batch} * kv.num_kv_heads <= kMaxGridY,
                "prefill: batch " << a.host.batch << " x kv heads " << kv.num_kv_heads << " exceeds " << kMaxGridY);
  if (a.host.batch == 0) return;
  KASCADE_CHECK(a.q != nullptr && a.q_indptr != nullptr && kv.k != nullptr && kv.v != nullptr &&
                    kv.page_indptr != nullptr && kv.page_indices != nullptr && kv.seq_lens != nullptr,
                "prefill: q, q_indptr and the kv cache's k, v, page_indptr, page_indices, seq_lens must be set");
  KASCADE_CHECK(aligned16(a.q) && aligned16(kv.k) && aligned16(kv.v),
                "prefill: q, k and v must be 16-byte aligned");
  KASCADE_CHECK(kv.head_stride % kChunkElems == 0 && kv.token_stride % kChunkElems == 0 &&
                    kv.page_stride % kChunkElems == 0,
                "prefill: kv strides (page " << kv.page_stride << ", token " << kv.token_stride << ", head "
                                             << kv.head_stride << ") must be multiples of 8 elements");
}

KvView make_kv_view(const PagedKV& kv) {
  KvView v;
  v.k = kv.k;
  v.v = kv.v;
  v.page_indptr = kv.page_indptr;
  v.page_indices = kv.page_indices;
  v.page_stride = kv.page_stride;
  v.token_stride = kv.token_stride;
  v.head_stride = kv.head_stride;
  v.page_size = FastDivmod(static_cast<uint32_t>(kv.page_size));
  return v;
}

// Query positions per CTA: rows are (position, head) pairs, P * G <= kBlockRows. A sparse CTA
// must stay inside one tile, so there P is a power of two dividing T.
int positions_per_cta(int group, int tile, bool sparse) {
  const int fit = kBlockRows / group;
  if (!sparse) return fit;
  int p = 1;
  while (p * 2 <= fit && p * 2 <= tile) p *= 2;
  return p;
}

// Calls f(std::integral_constant<int, D>, T{}) for the storage type and head dim of the call.
template <typename F>
void dispatch(DType dtype, int head_dim, F&& f) {
  auto with_dim = [&](auto elem) {
    if (head_dim == 64) return f(std::integral_constant<int, 64>{}, elem);
    return f(std::integral_constant<int, 128>{}, elem);
  };
  if (dtype == DType::BF16) return with_dim(__nv_bfloat16{});
  return with_dim(__half{});
}

struct WorkspaceLayout {
  size_t lse_offset = 0, mass_offset = 0, total = 0;
  int chunk_tiles = 0;
  int64_t mass_stride = 0;
};

WorkspaceLayout workspace_layout(const PrefillArgs& a, const SparsityParams& sp, const BatchGeometry& g) {
  WorkspaceLayout w;
  const int s = num_selections(a.kv.num_kv_heads, sp);
  w.mass_stride = g.max_p1;
  const size_t tile_bytes = size_t(g.batch) * s * size_t(w.mass_stride) * sizeof(float);
  if (g.max_tiles > 0 && tile_bytes > 0) {
    const size_t fit = kPrefillMassBudgetBytes / tile_bytes;
    w.chunk_tiles = static_cast<int>(std::min<size_t>({std::max<size_t>(fit, 1), size_t(g.max_tiles), size_t(kMaxGridY)}));
  }
  w.lse_offset = 0;
  w.mass_offset = align_up(size_t(g.total_q) * a.num_q_heads * sizeof(float));
  w.total = w.mass_offset + align_up(size_t(w.chunk_tiles) * tile_bytes);
  return w;
}

// The fields AttendParams and MassParams share: queries, batch arrays, cache view, heads, tile
// and the log2-domain softmax scale.
template <typename Params>
void set_query_fields(Params& p, const PrefillArgs& a, const SparsityParams& sp) {
  p.q = a.q;
  p.q_indptr = a.q_indptr;
  p.seq_lens = a.kv.seq_lens;
  p.kv = make_kv_view(a.kv);
  p.num_q_heads = a.num_q_heads;
  p.group = a.num_q_heads / a.kv.num_kv_heads;
  p.tile = sp.tile;
  p.scale_log2 = sp.scale_for(a.kv.head_dim) * cuda::kLog2e;
}

AttendParams make_attend_params(const PrefillArgs& a, const SparsityParams& sp, const BatchGeometry& g,
                                bool sparse) {
  AttendParams p{};
  set_query_fields(p, a, sp);
  p.out = a.out;
  p.positions_per_cta = positions_per_cta(p.group, sp.tile, sparse);
  p.num_position_blocks = (g.max_nq + p.positions_per_cta - 1) / p.positions_per_cta;
  return p;
}

// Launches the attention kernel of the call's storage type and head dim (grid: position block,
// kv head, sequence).
void attend(const PrefillArgs& a, const AttendParams& p, bool with_output, cudaStream_t stream) {
  const dim3 grid(p.num_position_blocks, a.kv.num_kv_heads, a.host.batch);
  dispatch(a.kv.dtype, a.kv.head_dim, [&](auto d, auto elem) {
    PrefillKernels<decltype(d)::value, decltype(elem)>::attend(p, with_output, grid, stream);
  });
}

void check_selection(const SelectionBuffer& sel, const PrefillArgs& a, const SparsityParams& sp) {
  const SelectionShape want = prefill_selection_shape(a.host, a.kv.num_kv_heads, sp);
  const SelectionShape& got = sel.shape;
  KASCADE_CHECK(got.batch == want.batch && got.num_selections == want.num_selections &&
                    got.max_tiles == want.max_tiles && got.k_max == want.k_max,
                "prefill: selection buffer shape [" << got.batch << ", " << got.num_selections << ", "
                                                    << got.max_tiles << ", " << got.k_max
                                                    << "] does not match this call's [" << want.batch << ", "
                                                    << want.num_selections << ", " << want.max_tiles << ", "
                                                    << want.k_max << "]");
  KASCADE_CHECK(want.counts_count() == 0 || sel.counts != nullptr, "prefill: selection counts pointer is null");
  KASCADE_CHECK(want.indices_count() == 0 || sel.indices != nullptr, "prefill: selection indices pointer is null");
}

void sparse_attend(const PrefillArgs& a, const SparsityParams& sp, const BatchGeometry& g,
                   const SelectionBuffer& sel, const int32_t* head_map, cudaStream_t stream) {
  AttendParams p = make_attend_params(a, sp, g, /*sparse=*/true);
  p.sel_indices = sel.indices;
  p.sel_counts = sel.counts;
  p.head_map = head_map;
  p.num_selections = sel.shape.num_selections;
  p.max_tiles = sel.shape.max_tiles;
  p.k_max = sel.shape.k_max;
  // A selection with k_max = 0 has no index storage; any non-null pointer marks the sparse path.
  if (p.sel_indices == nullptr) p.sel_indices = sel.counts;
  attend(a, p, /*with_output=*/true, stream);
}

}  // namespace

SelectionShape prefill_selection_shape(const PrefillBatch& batch, int num_kv_heads, const SparsityParams& sp) {
  const BatchGeometry g = inspect_batch(batch, sp);
  SelectionShape s;
  s.batch = g.batch;
  s.num_selections = num_selections(num_kv_heads, sp);
  s.max_tiles = g.max_tiles;
  s.k_max = g.k_max;
  return s;
}

size_t prefill_workspace_size(const PrefillArgs& args, const SparsityParams& sp, Role role) {
  check_args(args);
  const BatchGeometry g = inspect_batch(args.host, sp);
  if (!role_selects(role)) return 0;
  return workspace_layout(args, sp, g).total;
}

void prefill_dense(const PrefillArgs& a, const SparsityParams& sp, CUstream_st* stream) {
  check_args(a);
  const BatchGeometry g = inspect_batch(a.host, sp);
  if (g.total_q == 0) return;
  KASCADE_CHECK(a.out != nullptr, "prefill_dense: output pointer is null");
  attend(a, make_attend_params(a, sp, g, /*sparse=*/false), /*with_output=*/true, stream);
}

void prefill_anchor(const PrefillArgs& a, const SparsityParams& sp, bool dense_output, const SelectionBuffer& sel,
                    void* workspace, size_t workspace_bytes, CUstream_st* stream) {
  cuda::prefill::prefill_anchor_observed(a, sp, dense_output, sel, workspace, workspace_bytes, stream, nullptr);
}

const char* cuda::prefill::anchor_phase_name(AnchorPhase phase) {
  switch (phase) {
    case AnchorPhase::Lse: return "lse";
    case AnchorPhase::Mass: return "mass";
    case AnchorPhase::Topk: return "topk";
    case AnchorPhase::Sparse: return "sparse";
  }
  return "unknown";
}

void cuda::prefill::prefill_anchor_observed(const PrefillArgs& a, const SparsityParams& sp, bool dense_output,
                                            const SelectionBuffer& sel, void* workspace, size_t workspace_bytes,
                                            cudaStream_t stream, AnchorPhaseObserver* observer) {
  // Brackets one launch of a phase for the observer.
  auto observed = [&](AnchorPhase phase, auto&& launch) {
    if (observer != nullptr) observer->begin(phase, stream);
    launch();
    if (observer != nullptr) observer->end(phase, stream);
  };
  check_args(a);
  const BatchGeometry g = inspect_batch(a.host, sp);
  check_selection(sel, a, sp);
  const WorkspaceLayout w = workspace_layout(a, sp, g);
  KASCADE_CHECK(workspace_bytes >= w.total, "prefill_anchor: workspace of " << workspace_bytes << " bytes, needs "
                                                                            << w.total);
  if (g.total_q == 0) return;
  KASCADE_CHECK(a.out != nullptr, "prefill_anchor: output pointer is null");
  KASCADE_CHECK(workspace != nullptr && reinterpret_cast<uintptr_t>(workspace) % kWorkspaceAlign == 0,
                "prefill_anchor: workspace must be non-null and " << kWorkspaceAlign << "-byte aligned");
  unsigned char* ws = static_cast<unsigned char*>(workspace);
  float* lse = reinterpret_cast<float*>(ws + w.lse_offset);
  float* mass = reinterpret_cast<float*>(ws + w.mass_offset);
  const int s_count = num_selections(a.kv.num_kv_heads, sp);

  // 1. Exact row LSE over keys 0..t (with the dense output for layer 0).
  AttendParams dense = make_attend_params(a, sp, g, /*sparse=*/false);
  dense.lse_log2 = lse;
  observed(AnchorPhase::Lse, [&] { attend(a, dense, dense_output, stream); });

  // 2. Pooled mass and top-k, one chunk of tiles at a time (bounded workspace).
  MassParams mp{};
  set_query_fields(mp, a, sp);
  mp.lse_log2 = lse;
  mp.mass = mass;
  mp.mass_stride = w.mass_stride;
  mp.chunk_tiles = w.chunk_tiles;
  mp.num_selections = s_count;
  mp.num_kv_heads = a.kv.num_kv_heads;

  TopkParams tp{};
  tp.q_indptr = a.q_indptr;
  tp.seq_lens = a.kv.seq_lens;
  tp.mass = mass;
  tp.mass_stride = w.mass_stride;
  tp.sel_indices = sel.indices;
  tp.sel_counts = sel.counts;
  tp.chunk_tiles = w.chunk_tiles;
  tp.num_selections = s_count;
  tp.max_tiles = g.max_tiles;
  tp.k_max = g.k_max;
  tp.tile = sp.tile;
  tp.rolling = sp.rolling();
  tp.rho = sp.rho;
  tp.k_min = sp.k_min;
  tp.k_multiple = sp.k_multiple;

  for (int tile0 = 0; tile0 < g.max_tiles; tile0 += w.chunk_tiles) {
    const int chunk = std::min(w.chunk_tiles, g.max_tiles - tile0);
    // Largest candidate count b in this chunk decides how many key chunks the grid needs.
    int64_t max_prefix = 0;
    for (int b = 0; b < g.batch; ++b) {
      const int p1 = a.host.seq_lens_host[b];
      const int p0 = p1 - (a.host.q_indptr_host[b + 1] - a.host.q_indptr_host[b]);
      const int64_t tiles = num_tiles(p0, p1, sp.tile);
      if (tiles > tile0) max_prefix = std::max(max_prefix, tile_begin(p0, std::min<int64_t>(tiles, tile0 + chunk) - 1, sp.tile));
    }
    mp.tile0 = tp.tile0 = tile0;
    if (max_prefix > 0) {
      const dim3 grid(static_cast<unsigned>((max_prefix + kKeysPerMassCta - 1) / kKeysPerMassCta), chunk,
                      g.batch * s_count);
      observed(AnchorPhase::Mass, [&] {
        dispatch(a.kv.dtype, a.kv.head_dim, [&](auto d, auto elem) {
          PrefillKernels<decltype(d)::value, decltype(elem)>::pooled_mass(mp, grid, stream);
        });
      });
    }
    observed(AnchorPhase::Topk, [&] { cuda::prefill::launch_topk(tp, dim3(chunk, g.batch * s_count), stream); });
  }

  // 3. Sparse attention over each tile's selection plus its diagonal.
  if (!dense_output) {
    observed(AnchorPhase::Sparse, [&] { sparse_attend(a, sp, g, sel, /*head_map=*/nullptr, stream); });
  }
}

void prefill_reuse(const PrefillArgs& a, const SparsityParams& sp, const SelectionBuffer& sel,
                   const int32_t* head_map, CUstream_st* stream) {
  check_args(a);
  const BatchGeometry g = inspect_batch(a.host, sp);
  check_selection(sel, a, sp);
  if (g.total_q == 0) return;
  KASCADE_CHECK(a.out != nullptr, "prefill_reuse: output pointer is null");
  sparse_attend(a, sp, g, sel, head_map, stream);
}

}  // namespace kascade
