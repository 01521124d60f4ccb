// prefill_launch.cu — host side of the prefill family: the batch geometry read from the host
// copies of q_indptr / seq_lens (PrefillShape), the workspace layout, and the launch sequence of
// each role (kernels are compiled in instantiations/*.cu and prefill_topk.cu; the argument checks
// decode shares are in common/attention_host.h).
//
// Anchor sequence (SPEC 5):
//   1. attend (dense keys 0..t)   -> exact row LSE (and the dense output for layer 0)
//   2. for each chunk of tiles:  pooled_mass (exp(s - lse) summed over the tile's rows, keys < b)
//                                 topk (radix select per (tile, selection)) -> selection buffer
//   3. attend (selection + causal diagonal) -> output (anchors other than layer 0)
// Reuse is step 3 with another layer's q/k/v and the head map.
#include <algorithm>
#include <type_traits>

#include "../common/attention_host.h"
#include "../common/cuda_check.h"
#include "../common/workspace_layout.h"
#include "kascade/attention_prefill.h"
#include "kascade/budget.h"
#include "kascade/error.h"
#include "anchor_phases.h"
#include "prefill_params.h"

namespace kascade {
namespace {

using cuda::FastDivmod;
using cuda::WorkspaceLayout;
using cuda::WorkspaceSlice;
using cuda::prefill::AnchorPhase;
using cuda::prefill::AnchorPhaseObserver;
using cuda::prefill::AttendParams;
using cuda::prefill::KvView;
using cuda::prefill::MassParams;
using cuda::prefill::PrefillKernels;
using cuda::prefill::TopkParams;
using cuda::prefill::kBlockRows;
using cuda::prefill::kKeysPerMassCta;

constexpr int kMaxGridY = 65535;  // also the limit of gridDim.z

// Per-batch sizes derived (and validated) from the host copies of the batch arrays.
struct BatchGeometry {
  int batch = 0;
  int64_t total_q = 0;
  int max_nq = 0;
  int max_p1 = 0;
  int max_tiles = 0;
  int k_max = 0;
};

BatchGeometry inspect_batch(const PrefillShape& s, const SparsityParams& sp, const char* call) {
  KASCADE_CHECK(s.batch >= 0, call << ": batch size must be non-negative, got " << s.batch);
  KASCADE_CHECK(s.batch == 0 || (s.q_indptr_host != nullptr && s.seq_lens_host != nullptr),
                call << ": PrefillShape needs host copies of q_indptr and seq_lens");
  KASCADE_CHECK(sp.tile == 16 || sp.tile == 32 || sp.tile == 64,
                call << ": tile size " << sp.tile << " is not supported (supported: 16, 32, 64)");
  BatchGeometry g;
  g.batch = s.batch;
  if (s.batch == 0) return g;
  KASCADE_CHECK(s.q_indptr_host[0] == 0, call << ": q_indptr[0] must be 0, got " << s.q_indptr_host[0]);
  for (int b = 0; b < s.batch; ++b) {
    const int nq = s.q_indptr_host[b + 1] - s.q_indptr_host[b];
    const int p1 = s.seq_lens_host[b];
    KASCADE_CHECK(nq >= 0, call << ": q_indptr must be non-decreasing, sequence " << b << " has " << nq
                                << " queries");
    KASCADE_CHECK(p1 >= nq, call << ": sequence " << b << " has " << nq << " queries but only " << p1
                                 << " keys in the cache (seq_lens must count the new tokens)");
    const int p0 = p1 - nq;
    const int tiles = static_cast<int>(num_tiles(p0, p1, sp.tile));
    g.max_nq = std::max(g.max_nq, nq);
    g.max_p1 = std::max(g.max_p1, p1);
    g.max_tiles = std::max(g.max_tiles, tiles);
    g.k_max = std::max(g.k_max, static_cast<int>(max_tile_budget(sp.rolling(), p0, p1, sp.tile, sp.rho, sp.k_min,
                                                                 sp.k_multiple)));
  }
  g.total_q = s.q_indptr_host[s.batch];
  return g;
}

void check_shape(const PrefillShape& s, const char* call) {
  const char* why = nullptr;
  KASCADE_CHECK(prefill_supports(s, &why), call << ": unsupported shape (" << dtype_name(s.dtype) << ", head dim "
                                                << s.head_dim << ", " << s.num_q_heads << " query / " << s.num_kv_heads
                                                << " kv heads, batch " << s.batch << "): " << why);
}

// Everything a call's launches need, derived from the shape alone (so that the workspace query and
// the call agree).
struct PrefillLaunch {
  BatchGeometry g;
  int chunk_tiles = 0;       // tiles whose pooled mass one pass holds
  int64_t mass_stride = 0;   // floats per (sequence, tile, set) row of pooled mass
  WorkspaceSlice<float> lse, mass;
  size_t total_bytes = 0;
};

PrefillLaunch prefill_launch(const PrefillShape& s, Role role, const SparsityParams& sp, const char* call) {
  check_shape(s, call);
  PrefillLaunch launch;
  launch.g = inspect_batch(s, sp, call);
  if (!role_selects(role)) return launch;
  const BatchGeometry& g = launch.g;
  const int sets = cuda::selection_geometry(g.batch, s.num_kv_heads, g.max_tiles, g.k_max, sp).num_sets;
  launch.mass_stride = g.max_p1;
  const size_t tile_floats = size_t(g.batch) * sets * size_t(launch.mass_stride);
  if (g.max_tiles > 0 && tile_floats > 0) {
    const size_t fit = kPrefillMassBudgetBytes / (tile_floats * sizeof(float));
    launch.chunk_tiles =
        static_cast<int>(std::min<size_t>({std::max<size_t>(fit, 1), size_t(g.max_tiles), size_t(kMaxGridY)}));
  }
  WorkspaceLayout layout;
  launch.lse = layout.slice<float>(size_t(g.total_q) * s.num_q_heads);
  launch.mass = layout.slice<float>(size_t(launch.chunk_tiles) * tile_floats);
  launch.total_bytes = layout.total_bytes();
  return launch;
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
  if (dtype == DType::F16) return with_dim(__half{});
  KASCADE_FAIL("prefill: dtype " << dtype_name(dtype) << " is not built (supported: bf16, f16)");
}

struct CallContext {
  const PrefillTensors& t;
  const PrefillShape& shape;
  const SparsityParams& sparsity;
  const PrefillLaunch& launch;
  cudaStream_t stream;
};

// The fields AttendParams and MassParams share: queries, batch arrays, cache view, heads, tile
// and the log2-domain softmax scale.
template <typename Params>
void set_query_fields(Params& p, const CallContext& c) {
  p.q = c.t.q;
  p.q_indptr = c.t.q_indptr;
  p.seq_lens = c.t.kv.seq_lens;
  p.kv = make_kv_view(c.t.kv);
  p.num_q_heads = c.shape.num_q_heads;
  p.group = c.shape.num_q_heads / c.shape.num_kv_heads;
  p.tile = c.sparsity.tile;
  p.scale_log2 = c.sparsity.scale_for(c.shape.head_dim) * cuda::kLog2e;
}

AttendParams make_attend_params(const CallContext& c, bool sparse) {
  AttendParams p{};
  set_query_fields(p, c);
  p.out = c.t.out;
  p.positions_per_cta = positions_per_cta(p.group, c.sparsity.tile, sparse);
  p.num_position_blocks = (c.launch.g.max_nq + p.positions_per_cta - 1) / p.positions_per_cta;
  return p;
}

// Launches the attention kernel of the call's storage type and head dim (grid: position block,
// kv head, sequence).
void attend(const CallContext& c, const AttendParams& p, bool with_output) {
  const dim3 grid(p.num_position_blocks, c.shape.num_kv_heads, c.shape.batch);
  dispatch(c.shape.dtype, c.shape.head_dim, [&](auto d, auto elem) {
    PrefillKernels<decltype(d)::value, decltype(elem)>::attend(p, with_output, grid, c.stream);
  });
}

void sparse_attend(const CallContext& c, const Selection& sel, const int32_t* head_map) {
  AttendParams p = make_attend_params(c, /*sparse=*/true);
  p.sel_indices = sel.indices;
  p.sel_counts = sel.counts;
  p.head_map = head_map;
  p.num_selections = sel.num_sets;
  p.max_tiles = sel.max_tiles;
  p.k_max = static_cast<int>(sel.k_max);
  // A selection with k_max = 0 has no index storage; any non-null pointer marks the sparse path.
  if (p.sel_indices == nullptr) p.sel_indices = sel.counts;
  attend(c, p, /*with_output=*/true);
}

// The launch layout of a call, after every check of its arguments.
PrefillLaunch checked_launch(const PrefillTensors& t, const PrefillShape& shape, const SparsityParams& sparsity,
                             Role role, const Selection* selection, const Workspace& ws, const char* call) {
  const PrefillLaunch launch = prefill_launch(shape, role, sparsity, call);
  cuda::check_tensors(t, shape, call);
  KASCADE_CHECK(shape.batch == 0 || t.q_indptr != nullptr, call << ": q_indptr must be a device pointer");
  cuda::check_workspace(ws, launch.total_bytes, call, "prefill_workspace_size");
  if (selection != nullptr) cuda::check_selection(*selection, prefill_selection(shape, sparsity), call);
  return launch;
}

// Layer 0 (dense output) or an anchor (sparse output): the selections, then the output.
void run_selecting(Role role, const PrefillTensors& t, const PrefillShape& shape, const SparsityParams& sp,
                   const Selection& sel, const Workspace& ws, cudaStream_t stream, AnchorPhaseObserver* observer,
                   const char* call) {
  KASCADE_CHECK(role_selects(role), call << ": role " << to_string(role) << " does not select");
  // Brackets one launch of a phase for the observer.
  auto observed = [&](AnchorPhase phase, auto&& launch) {
    if (observer != nullptr) observer->begin(phase, stream);
    launch();
    if (observer != nullptr) observer->end(phase, stream);
  };
  const PrefillLaunch launch = checked_launch(t, shape, sp, role, &sel, ws, call);
  const BatchGeometry& g = launch.g;
  if (g.total_q == 0) return;
  const CallContext c{t, shape, sp, launch, stream};
  float* lse = launch.lse.in(ws.data);
  float* mass = launch.mass.in(ws.data);
  const bool dense_output = role == Role::Layer0;

  // 1. Exact row LSE over keys 0..t (with the dense output for layer 0).
  AttendParams dense = make_attend_params(c, /*sparse=*/false);
  dense.lse_log2 = lse;
  observed(AnchorPhase::Lse, [&] { attend(c, dense, dense_output); });

  // 2. Pooled mass and top-k, one chunk of tiles at a time (bounded workspace).
  MassParams mp{};
  set_query_fields(mp, c);
  mp.lse_log2 = lse;
  mp.mass = mass;
  mp.mass_stride = launch.mass_stride;
  mp.chunk_tiles = launch.chunk_tiles;
  mp.num_selections = sel.num_sets;
  mp.num_kv_heads = shape.num_kv_heads;

  TopkParams tp{};
  tp.q_indptr = t.q_indptr;
  tp.seq_lens = t.kv.seq_lens;
  tp.mass = mass;
  tp.mass_stride = launch.mass_stride;
  tp.sel_indices = sel.indices;
  tp.sel_counts = sel.counts;
  tp.chunk_tiles = launch.chunk_tiles;
  tp.num_selections = sel.num_sets;
  tp.max_tiles = g.max_tiles;
  tp.k_max = g.k_max;
  tp.tile = sp.tile;
  tp.rolling = sp.rolling();
  tp.rho = sp.rho;
  tp.k_min = sp.k_min;
  tp.k_multiple = sp.k_multiple;

  for (int tile0 = 0; tile0 < g.max_tiles; tile0 += launch.chunk_tiles) {
    const int chunk = std::min(launch.chunk_tiles, g.max_tiles - tile0);
    // Largest candidate count b in this chunk decides how many key chunks the grid needs.
    int64_t max_prefix = 0;
    for (int b = 0; b < g.batch; ++b) {
      const int p1 = shape.seq_lens_host[b];
      const int p0 = p1 - (shape.q_indptr_host[b + 1] - shape.q_indptr_host[b]);
      const int64_t tiles = num_tiles(p0, p1, sp.tile);
      if (tiles > tile0) max_prefix = std::max(max_prefix, tile_begin(p0, std::min<int64_t>(tiles, tile0 + chunk) - 1, sp.tile));
    }
    mp.tile0 = tp.tile0 = tile0;
    if (max_prefix > 0) {
      const dim3 grid(static_cast<unsigned>((max_prefix + kKeysPerMassCta - 1) / kKeysPerMassCta), chunk,
                      g.batch * sel.num_sets);
      observed(AnchorPhase::Mass, [&] {
        dispatch(shape.dtype, shape.head_dim, [&](auto d, auto elem) {
          PrefillKernels<decltype(d)::value, decltype(elem)>::pooled_mass(mp, grid, stream);
        });
      });
    }
    observed(AnchorPhase::Topk, [&] { cuda::prefill::launch_topk(tp, dim3(chunk, g.batch * sel.num_sets), stream); });
  }

  // 3. Sparse attention over each tile's selection plus its diagonal.
  if (!dense_output) {
    observed(AnchorPhase::Sparse, [&] { sparse_attend(c, sel, /*head_map=*/nullptr); });
  }
}

}  // namespace

bool prefill_supports(const PrefillShape& shape, const char** why) {
  const char* reason = cuda::unsupported_heads(shape.dtype, shape.head_dim, shape.num_q_heads, shape.num_kv_heads);
  if (reason == nullptr && shape.batch < 0) reason = "batch must be non-negative";
  // Grid y/z carry kv heads, sequences and (sequence, selection) pairs.
  if (reason == nullptr && int64_t{shape.batch} * shape.num_kv_heads > kMaxGridY) {
    reason = "batch x kv heads exceeds 65535";
  }
  if (why != nullptr) *why = reason;
  return reason == nullptr;
}

Selection prefill_selection(const PrefillShape& shape, const SparsityParams& sparsity) {
  const BatchGeometry g = inspect_batch(shape, sparsity, "prefill_selection");
  return cuda::selection_geometry(g.batch, shape.num_kv_heads, g.max_tiles, g.k_max, sparsity);
}

size_t prefill_workspace_size(const PrefillShape& shape, Role role, const SparsityParams& sparsity) {
  return prefill_launch(shape, role, sparsity, "prefill_workspace_size").total_bytes;
}

void prefill_dense(const PrefillTensors& t, const PrefillShape& shape, const SparsityParams& sparsity, Workspace ws,
                   cudaStream_t stream) {
  const PrefillLaunch launch = checked_launch(t, shape, sparsity, Role::Dense, nullptr, ws, "prefill_dense");
  if (launch.g.total_q == 0) return;
  const CallContext c{t, shape, sparsity, launch, stream};
  attend(c, make_attend_params(c, /*sparse=*/false), /*with_output=*/true);
}

void prefill_layer0(const PrefillTensors& t, const PrefillShape& shape, const SparsityParams& sparsity,
                    const Selection& selection, Workspace ws, cudaStream_t stream) {
  run_selecting(Role::Layer0, t, shape, sparsity, selection, ws, stream, nullptr, "prefill_layer0");
}

void prefill_anchor(const PrefillTensors& t, const PrefillShape& shape, const SparsityParams& sparsity,
                    const Selection& selection, Workspace ws, cudaStream_t stream) {
  run_selecting(Role::Anchor, t, shape, sparsity, selection, ws, stream, nullptr, "prefill_anchor");
}

void prefill_reuse(const PrefillTensors& t, const PrefillShape& shape, const SparsityParams& sparsity,
                   const Selection& selection, const int32_t* head_map, Workspace ws, cudaStream_t stream) {
  const PrefillLaunch launch = checked_launch(t, shape, sparsity, Role::Reuse, &selection, ws, "prefill_reuse");
  if (launch.g.total_q == 0) return;
  const CallContext c{t, shape, sparsity, launch, stream};
  sparse_attend(c, selection, head_map);
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

void cuda::prefill::prefill_selecting_observed(Role role, const PrefillTensors& t, const PrefillShape& shape,
                                               const SparsityParams& sparsity, const Selection& selection,
                                               Workspace ws, cudaStream_t stream, AnchorPhaseObserver* observer) {
  run_selecting(role, t, shape, sparsity, selection, ws, stream, observer,
                role == Role::Layer0 ? "prefill_layer0" : "prefill_anchor");
}

}  // namespace kascade
