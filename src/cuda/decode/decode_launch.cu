// src/cuda/decode/decode_launch.cu — host side of the decode family: the chooser (splits, mass
// chunks), the workspace layout, and the four public entry points of kascade/attention.h composed
// from the kernels.
//
//   dense   split pass (DenseSplit) -> combine
//   layer0  split pass (Layer0Split: output + logits) -> combine (+ softmax statistics) -> top-k
//   anchor  split pass (ScoresSplit: K only) -> combine (statistics only) -> top-k
//           -> split pass over the selection (SparseSplit) -> combine
//   reuse   split pass over the selection through the head map (SparseSplit) -> combine
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>

#include "../common/attention_host.h"
#include "../common/cuda_check.h"
#include "../common/workspace_layout.h"
#include "decode_combine.cuh"
#include "decode_params.h"
#include "kascade/attention.h"
#include "kascade/budget.h"

namespace kascade {

namespace {

using cuda::kMaxDecodeSplits;
using cuda::WorkspaceLayout;
using cuda::WorkspaceSlice;

constexpr int kMinKeysPerSplit = 1024;     // below this a split's fixed cost (prologue, merge, combine) shows
constexpr int kTargetBlocksPerSm = 16;     // several waves, so that ragged tails even out
constexpr int kMaxMassChunks = 64;         // blocks per selection set in the top-k's first pass

int multiprocessor_count() {
  int device = 0;
  KASCADE_CUDA_CHECK(cudaGetDevice(&device));
  int count = 0;
  KASCADE_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

// Splits of the keys of one (sequence, kv head). Worked example (H100, 132 SMs): batch 64, 8 kv
// heads, 128k keys -> 512 (sequence, head) pairs, ceil(16 * 132 / 512) = 5 splits of ~26k keys.
// Batch 1 at 128k keys -> min(264, 131072 / 1024 = 128) = 128 splits (256-key splits measured
// 0.229 ms at 128k, 2.35 TB/s: the per-split fixed cost showed).
int choose_splits(int batch, int kv_heads, int64_t max_keys, int num_sms) {
  const int64_t pairs = std::max<int64_t>(1, static_cast<int64_t>(batch) * kv_heads);
  const int64_t wanted = (static_cast<int64_t>(kTargetBlocksPerSm) * num_sms + pairs - 1) / pairs;
  const int64_t by_length = std::max<int64_t>(1, (max_keys + kMinKeysPerSplit - 1) / kMinKeysPerSplit);
  return static_cast<int>(std::clamp<int64_t>(std::min(wanted, by_length), 1, kMaxDecodeSplits));
}

// Everything a call's launches need, derived from the shape alone (so that the workspace query and
// the call agree, and graph replays see the same grids).
struct DecodeLaunch {
  int dense_splits = 0;    // splits of the pass over all n keys
  int sparse_splits = 0;   // splits of the pass over a selection
  int64_t score_stride = 0;
  int mass_chunks = 1;     // blocks per selection set computing pooled masses
  WorkspaceSlice<float> partial_out, scores, pooled;
  WorkspaceSlice<float2> partial_ml, head_ml;
  WorkspaceSlice<int32_t> candidates;
  WorkspaceSlice<int> histogram;
  size_t total_bytes = 0;
};

// Whether the call's kernels read a selection buffer (an anchor its own, a reuse layer its anchor's).
bool role_reads_selection(Role role) { return role == Role::Anchor || role == Role::Reuse; }

void check_shape(const DecodeShape& s, const char* call) {
  KASCADE_CHECK(s.batch > 0, call << ": batch must be positive, got " << s.batch);
  const char* why = nullptr;
  KASCADE_CHECK(decode_supports(s, &why), call << ": unsupported shape (" << dtype_name(s.dtype) << ", head dim "
                                               << s.head_dim << ", " << s.num_q_heads << " query / " << s.num_kv_heads
                                               << " kv heads): " << why);
  KASCADE_CHECK(s.max_seq_len > 0 && s.max_seq_len < (int64_t{1} << 31),
                call << ": max_seq_len must be in 1..2^31-1, got " << s.max_seq_len);
}

DecodeLaunch decode_launch(const DecodeShape& s, Role role, const SparsityParams& sp, const char* call) {
  check_shape(s, call);
  const int num_sms = multiprocessor_count();
  const Selection selection = decode_selection(s, sp);
  DecodeLaunch launch;
  launch.dense_splits = role == Role::Reuse ? 0 : choose_splits(s.batch, s.num_kv_heads, s.max_seq_len, num_sms);
  launch.sparse_splits =
      role_reads_selection(role) ? choose_splits(s.batch, s.num_kv_heads, selection.k_max, num_sms) : 0;
  const size_t splits = static_cast<size_t>(std::max(launch.dense_splits, launch.sparse_splits));
  const size_t rows = static_cast<size_t>(s.batch) * s.num_q_heads;
  launch.score_stride = role_selects(role) ? (s.max_seq_len + 3) / 4 * 4 : 0;  // 16-byte aligned rows
  const int64_t sets = static_cast<int64_t>(s.batch) * selection.num_sets;
  if (role_selects(role)) {
    // Few sets (small batches) leave SMs idle in the one-block-per-set top-k: spread its first
    // pass over chunks of >= kMinKeysPerSplit keys, up to ~2 blocks per SM in all.
    const int64_t wanted = (2 * static_cast<int64_t>(num_sms) + sets - 1) / sets;
    const int64_t by_length = std::max<int64_t>(1, s.max_seq_len / kMinKeysPerSplit);
    launch.mass_chunks = static_cast<int>(std::clamp<int64_t>(std::min(wanted, by_length), 1, kMaxMassChunks));
  }
  const size_t per_set = static_cast<size_t>(sets) * launch.score_stride;
  WorkspaceLayout layout;
  launch.partial_out = layout.slice<float>(rows * splits * s.head_dim);
  launch.partial_ml = layout.slice<float2>(rows * splits);
  launch.head_ml = layout.slice<float2>(rows);
  launch.scores = layout.slice<float>(rows * launch.score_stride);
  launch.pooled = layout.slice<float>(per_set);
  launch.candidates = layout.slice<int32_t>(per_set);
  launch.histogram = layout.slice<int>(launch.mass_chunks > 1 ? static_cast<size_t>(sets) * cuda::kTopkDigitBins : 0);
  launch.total_bytes = layout.total_bytes();
  return launch;
}

// Calls fn(T{}, std::integral_constant<int, D>{}) for the storage type and head dim of the shape.
template <typename Fn>
void dispatch_type_and_dim(DType dtype, int head_dim, Fn&& fn) {
  auto with_dim = [&](auto type_tag) {
    switch (head_dim) {
      case 64: fn(type_tag, std::integral_constant<int, 64>{}); return;
      case 128: fn(type_tag, std::integral_constant<int, 128>{}); return;
      default: KASCADE_FAIL("decode: head dim " << head_dim << " is not built (supported: 64, 128)");
    }
  };
  switch (dtype) {
    case DType::BF16: with_dim(__nv_bfloat16{}); return;
    case DType::F16: with_dim(__half{}); return;
    default: KASCADE_FAIL("decode: dtype " << dtype_name(dtype) << " is not built (supported: bf16, f16)");
  }
}

struct CallContext {
  const DecodeTensors& t;
  const DecodeShape& shape;
  const SparsityParams& sparsity;
  const DecodeLaunch& launch;
  const Workspace& ws;
  cudaStream_t stream;
};

cuda::DecodeSplitParams split_params(const CallContext& c, int splits) {
  const PagedKV& kv = c.t.kv;
  cuda::DecodeSplitParams p{};
  p.q = c.t.q;
  p.k = kv.k;
  p.v = kv.v;
  p.page_stride = kv.page_stride;
  p.token_stride = kv.token_stride;
  p.head_stride = kv.head_stride;
  p.page_size = cuda::FastDivmod(static_cast<uint32_t>(kv.page_size));
  p.page_indptr = kv.page_indptr;
  p.page_indices = kv.page_indices;
  p.seq_lens = kv.seq_lens;
  p.max_seq_len = static_cast<int>(c.shape.max_seq_len);
  p.num_q_heads = c.shape.num_q_heads;
  p.group = c.shape.num_q_heads / c.shape.num_kv_heads;
  p.scale_log2 = c.sparsity.scale_for(c.shape.head_dim) * cuda::kLog2e;
  p.num_splits = splits;
  p.partial_out = c.launch.partial_out.in(c.ws.data);
  p.partial_ml = c.launch.partial_ml.in(c.ws.data);
  p.scores = c.launch.scores.in(c.ws.data);
  p.score_stride = c.launch.score_stride;
  return p;
}

template <typename Role>
void run_split_pass(const CallContext& c, const cuda::DecodeSplitParams& p) {
  const dim3 grid(p.num_splits, c.shape.num_kv_heads, c.shape.batch);
  dispatch_type_and_dim(c.shape.dtype, c.shape.head_dim, [&](auto type_tag, auto dim_tag) {
    using T = decltype(type_tag);
    constexpr int kDim = decltype(dim_tag)::value;
    cuda::launch_decode_split<T, kDim, Role>(p, grid, c.stream);
  });
  KASCADE_CUDA_CHECK(cudaGetLastError());
}

void run_combine(const CallContext& c, int splits, void* out, bool publish_stats) {
  cuda::DecodeCombineParams p{};
  p.partial_out = c.launch.partial_out.in(c.ws.data);
  p.partial_ml = c.launch.partial_ml.in(c.ws.data);
  p.out = out;
  p.head_ml = publish_stats ? c.launch.head_ml.in(c.ws.data) : nullptr;
  p.rows = c.shape.batch * c.shape.num_q_heads;
  p.num_splits = splits;
  p.head_dim = c.shape.head_dim;
  if (c.shape.dtype == DType::BF16) {
    cuda::launch_decode_combine<__nv_bfloat16>(p, c.stream);
  } else {
    cuda::launch_decode_combine<__half>(p, c.stream);
  }
  KASCADE_CUDA_CHECK(cudaGetLastError());
}

void run_topk(const CallContext& c, const Selection& sel) {
  cuda::PooledTopkParams p{};
  p.scores = c.launch.scores.in(c.ws.data);
  p.score_stride = c.launch.score_stride;
  p.head_ml = c.launch.head_ml.in(c.ws.data);
  p.pooled = c.launch.pooled.in(c.ws.data);
  p.candidates = c.launch.candidates.in(c.ws.data);
  p.digit_histogram = c.launch.histogram.in(c.ws.data);
  p.mass_chunks = c.launch.mass_chunks;
  p.sel_indices = sel.indices;
  p.sel_counts = sel.counts;
  p.seq_lens = c.t.kv.seq_lens;
  p.max_seq_len = static_cast<int>(c.shape.max_seq_len);
  p.num_q_heads = c.shape.num_q_heads;
  p.num_sets = sel.num_sets;
  p.heads_per_set = c.shape.num_q_heads / sel.num_sets;
  p.sel_kmax = static_cast<int>(sel.k_max);
  p.rho = c.sparsity.rho;
  p.k_min = c.sparsity.k_min;
  p.k_multiple = c.sparsity.k_multiple;
  cuda::launch_pooled_topk(p, c.shape.batch, c.stream);
}

void run_sparse(const CallContext& c, const Selection& sel, const int32_t* head_map) {
  cuda::DecodeSplitParams p = split_params(c, c.launch.sparse_splits);
  p.sel_indices = sel.indices;
  p.sel_counts = sel.counts;
  p.head_map = head_map;
  p.num_sets = sel.num_sets;
  p.sel_kmax = static_cast<int>(sel.k_max);
  run_split_pass<cuda::SparseSplit>(c, p);
  run_combine(c, c.launch.sparse_splits, c.t.out, false);
}

// The launch layout of a call, after every check of its arguments.
DecodeLaunch checked_launch(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity,
                            Role role, const Selection* selection, const Workspace& ws, const char* call) {
  const DecodeLaunch launch = decode_launch(shape, role, sparsity, call);
  cuda::check_tensors(t, shape, call);
  cuda::check_workspace(ws, launch.total_bytes, call, "decode_workspace_size");
  if (selection != nullptr) cuda::check_selection(*selection, decode_selection(shape, sparsity), call);
  return launch;
}

}  // namespace

bool decode_supports(const DecodeShape& shape, const char** why) {
  const char* reason = cuda::unsupported_heads(shape.dtype, shape.head_dim, shape.num_q_heads, shape.num_kv_heads);
  if (why != nullptr) *why = reason;
  return reason == nullptr;
}

Selection decode_selection(const DecodeShape& shape, const SparsityParams& sparsity) {
  return cuda::selection_geometry(shape.batch, shape.num_kv_heads, /*max_tiles=*/1,
                                  budget_k(shape.max_seq_len, sparsity.rho, sparsity.k_min, sparsity.k_multiple),
                                  sparsity);
}

size_t decode_workspace_size(const DecodeShape& shape, Role role, const SparsityParams& sparsity) {
  return decode_launch(shape, role, sparsity, "decode_workspace_size").total_bytes;
}

void decode_dense(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity, Workspace ws,
                  cudaStream_t stream) {
  const DecodeLaunch launch = checked_launch(t, shape, sparsity, Role::Dense, nullptr, ws, "decode_dense");
  const CallContext c{t, shape, sparsity, launch, ws, stream};
  run_split_pass<cuda::DenseSplit>(c, split_params(c, launch.dense_splits));
  run_combine(c, launch.dense_splits, t.out, false);
}

void decode_layer0(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity,
                   const Selection& selection, Workspace ws, cudaStream_t stream) {
  const DecodeLaunch launch = checked_launch(t, shape, sparsity, Role::Layer0, &selection, ws, "decode_layer0");
  const CallContext c{t, shape, sparsity, launch, ws, stream};
  run_split_pass<cuda::Layer0Split>(c, split_params(c, launch.dense_splits));
  run_combine(c, launch.dense_splits, t.out, true);
  run_topk(c, selection);
}

void decode_anchor(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity,
                   const Selection& selection, Workspace ws, cudaStream_t stream) {
  const DecodeLaunch launch = checked_launch(t, shape, sparsity, Role::Anchor, &selection, ws, "decode_anchor");
  const CallContext c{t, shape, sparsity, launch, ws, stream};
  run_split_pass<cuda::ScoresSplit>(c, split_params(c, launch.dense_splits));
  run_combine(c, launch.dense_splits, nullptr, true);
  run_topk(c, selection);
  run_sparse(c, selection, nullptr);
}

void decode_reuse(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity,
                  const Selection& selection, const int32_t* head_map, Workspace ws, cudaStream_t stream) {
  const DecodeLaunch launch = checked_launch(t, shape, sparsity, Role::Reuse, &selection, ws, "decode_reuse");
  const CallContext c{t, shape, sparsity, launch, ws, stream};
  run_sparse(c, selection, head_map);
}

// The combine kernel is instantiated here for both storage types.
namespace cuda {
template void launch_decode_combine<__nv_bfloat16>(const DecodeCombineParams&, cudaStream_t);
template void launch_decode_combine<__half>(const DecodeCombineParams&, cudaStream_t);
}  // namespace cuda

}  // namespace kascade
