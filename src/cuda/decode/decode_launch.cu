// src/cuda/decode/decode_launch.cu — host side of the decode family: the chooser, the workspace
// layout, and the four public entry points of kascade/attention.h composed from the kernels.
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

#include "../common/cuda_check.h"
#include "decode_combine.cuh"
#include "decode_params.h"
#include "kascade/attention.h"
#include "kascade/budget.h"

namespace kascade {

namespace {

using cuda::kMaxDecodeSplits;

constexpr int kMinKeysPerSplit = 1024;     // below this a split's fixed cost (prologue, merge, combine) shows
constexpr int kTargetBlocksPerSm = 16;     // several waves, so that ragged tails even out
constexpr int kMaxMassChunks = 64;         // blocks per selection set in the top-k's first pass
constexpr size_t kWorkspaceAlignment = 256;

size_t align_up(size_t x) { return (x + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment; }

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
struct DecodePlan {
  int dense_splits = 0;    // splits of the pass over all n keys
  int sparse_splits = 0;   // splits of the pass over a selection
  int64_t score_stride = 0;
  size_t partial_out_offset = 0, partial_ml_offset = 0, head_ml_offset = 0, scores_offset = 0, pooled_offset = 0,
         candidates_offset = 0, histogram_offset = 0;
  int mass_chunks = 1;     // blocks per selection set computing pooled masses
  size_t total_bytes = 0;
};

// Whether the call's kernels read a selection buffer (an anchor its own, a reuse layer its anchor's).
bool role_reads_selection(Role role) { return role == Role::Anchor || role == Role::Reuse; }

void check_shape(const DecodeShape& s) {
  KASCADE_CHECK(s.batch > 0, "decode: batch must be positive, got " << s.batch);
  KASCADE_CHECK(s.num_kv_heads > 0 && s.num_q_heads > 0 && s.num_q_heads % s.num_kv_heads == 0,
                "decode: query heads (" << s.num_q_heads << ") must be a positive multiple of kv heads ("
                                        << s.num_kv_heads << ")");
  const char* why = nullptr;
  KASCADE_CHECK(decode_supports(s, &why), "decode: unsupported shape: " << why);
  KASCADE_CHECK(s.max_seq_len > 0 && s.max_seq_len < (int64_t{1} << 31),
                "decode: max_seq_len must be in 1..2^31-1, got " << s.max_seq_len);
}

DecodePlan plan_decode(const DecodeShape& s, Role role, const SparsityParams& sp) {
  check_shape(s);
  const int num_sms = multiprocessor_count();
  DecodePlan plan;
  const int64_t kmax = decode_selection_kmax(s, sp);
  plan.dense_splits = role == Role::Reuse ? 0 : choose_splits(s.batch, s.num_kv_heads, s.max_seq_len, num_sms);
  plan.sparse_splits = role_reads_selection(role) ? choose_splits(s.batch, s.num_kv_heads, kmax, num_sms) : 0;
  const int splits = std::max(plan.dense_splits, plan.sparse_splits);
  const size_t rows = static_cast<size_t>(s.batch) * s.num_q_heads;
  plan.score_stride = role_selects(role) ? (s.max_seq_len + 3) / 4 * 4 : 0;  // 16-byte aligned rows
  size_t offset = 0;
  plan.partial_out_offset = offset;
  offset = align_up(offset + rows * splits * s.head_dim * sizeof(float));
  plan.partial_ml_offset = offset;
  offset = align_up(offset + rows * splits * sizeof(float2));
  plan.head_ml_offset = offset;
  offset = align_up(offset + rows * sizeof(float2));
  plan.scores_offset = offset;
  offset = align_up(offset + rows * plan.score_stride * sizeof(float));
  const size_t per_set_bytes = static_cast<size_t>(s.batch) * decode_selection_sets(s, sp) * plan.score_stride * 4;
  plan.pooled_offset = offset;
  offset = align_up(offset + per_set_bytes);
  plan.candidates_offset = offset;
  offset = align_up(offset + per_set_bytes);
  const int64_t sets = static_cast<int64_t>(s.batch) * decode_selection_sets(s, sp);
  if (role_selects(role)) {
    // Few sets (small batches) leave SMs idle in the one-block-per-set top-k: spread its first
    // pass over chunks of >= kMinKeysPerSplit keys, up to ~2 blocks per SM in all.
    const int64_t wanted = (2 * static_cast<int64_t>(num_sms) + sets - 1) / sets;
    const int64_t by_length = std::max<int64_t>(1, s.max_seq_len / kMinKeysPerSplit);
    plan.mass_chunks = static_cast<int>(std::clamp<int64_t>(std::min(wanted, by_length), 1, kMaxMassChunks));
  }
  plan.histogram_offset = offset;
  offset = align_up(offset + (plan.mass_chunks > 1 ? sets * cuda::kTopkDigitBins * sizeof(int) : 0));
  plan.total_bytes = offset;
  return plan;
}

template <typename T>
T* at(const Workspace& ws, size_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(ws.data) + offset);
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
  const DecodePlan& plan;
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
  p.partial_out = at<float>(c.ws, c.plan.partial_out_offset);
  p.partial_ml = at<float2>(c.ws, c.plan.partial_ml_offset);
  p.scores = at<float>(c.ws, c.plan.scores_offset);
  p.score_stride = c.plan.score_stride;
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
  p.partial_out = at<float>(c.ws, c.plan.partial_out_offset);
  p.partial_ml = at<float2>(c.ws, c.plan.partial_ml_offset);
  p.out = out;
  p.head_ml = publish_stats ? at<float2>(c.ws, c.plan.head_ml_offset) : nullptr;
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

void run_topk(const CallContext& c, const DecodeSelection& sel) {
  cuda::PooledTopkParams p{};
  p.scores = at<float>(c.ws, c.plan.scores_offset);
  p.score_stride = c.plan.score_stride;
  p.head_ml = at<float2>(c.ws, c.plan.head_ml_offset);
  p.pooled = at<float>(c.ws, c.plan.pooled_offset);
  p.candidates = at<int32_t>(c.ws, c.plan.candidates_offset);
  p.digit_histogram = at<int>(c.ws, c.plan.histogram_offset);
  p.mass_chunks = c.plan.mass_chunks;
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

void run_sparse(const CallContext& c, const DecodeSelection& sel, const int32_t* head_map) {
  cuda::DecodeSplitParams p = split_params(c, c.plan.sparse_splits);
  p.sel_indices = sel.indices;
  p.sel_counts = sel.counts;
  p.head_map = head_map;
  p.num_sets = sel.num_sets;
  p.sel_kmax = static_cast<int>(sel.k_max);
  run_split_pass<cuda::SparseSplit>(c, p);
  run_combine(c, c.plan.sparse_splits, c.t.out, false);
}

void check_tensors(const DecodeTensors& t, const DecodeShape& s, const char* call) {
  KASCADE_CHECK(t.q != nullptr && t.out != nullptr, call << ": q and out must be device pointers");
  KASCADE_CHECK(t.num_q_heads == s.num_q_heads, call << ": tensors have " << t.num_q_heads
                                                      << " query heads, the shape " << s.num_q_heads);
  const PagedKV& kv = t.kv;
  KASCADE_CHECK(kv.k != nullptr && kv.v != nullptr && kv.page_indptr != nullptr && kv.page_indices != nullptr &&
                    kv.seq_lens != nullptr,
                call << ": the KV cache needs k, v, page_indptr, page_indices and seq_lens");
  KASCADE_CHECK(kv.dtype == s.dtype && kv.batch == s.batch && kv.num_kv_heads == s.num_kv_heads &&
                    kv.head_dim == s.head_dim,
                call << ": the KV cache (" << dtype_name(kv.dtype) << ", batch " << kv.batch << ", " << kv.num_kv_heads
                     << " kv heads, dim " << kv.head_dim << ") does not match the shape (" << dtype_name(s.dtype)
                     << ", batch " << s.batch << ", " << s.num_kv_heads << ", dim " << s.head_dim << ")");
  KASCADE_CHECK(kv.page_size > 0, call << ": page size must be positive, got " << kv.page_size);
  // 16-byte row loads need 8-element aligned strides.
  KASCADE_CHECK(kv.head_stride % 8 == 0 && kv.token_stride % 8 == 0 && kv.page_stride % 8 == 0,
                call << ": KV strides must be multiples of 8 elements (16-byte rows), got page " << kv.page_stride
                     << ", token " << kv.token_stride << ", head " << kv.head_stride);
}

void check_workspace(const Workspace& ws, const DecodePlan& plan, const char* call) {
  KASCADE_CHECK(ws.data != nullptr && ws.bytes >= plan.total_bytes,
                call << ": workspace of " << ws.bytes << " bytes is too small, decode_workspace_size says "
                     << plan.total_bytes);
}

void check_selection(const DecodeSelection& sel, const DecodeShape& s, const SparsityParams& sp, const char* call) {
  KASCADE_CHECK(sel.indices != nullptr && sel.counts != nullptr, call << ": selection buffers are null");
  KASCADE_CHECK(sel.num_sets == decode_selection_sets(s, sp),
                call << ": selection has " << sel.num_sets << " sets, the pooling mode needs "
                     << decode_selection_sets(s, sp));
  KASCADE_CHECK(sel.k_max >= decode_selection_kmax(s, sp),
                call << ": selection k_max " << sel.k_max << " is below budget_k(max_seq_len) = "
                     << decode_selection_kmax(s, sp));
  KASCADE_CHECK(sel.k_max < (int64_t{1} << 31), call << ": selection k_max " << sel.k_max << " is too large");
}

}  // namespace

int decode_selection_sets(const DecodeShape& shape, const SparsityParams& sparsity) {
  return sparsity.pooling == Pooling::All ? 1 : shape.num_kv_heads;
}

int64_t decode_selection_kmax(const DecodeShape& shape, const SparsityParams& sparsity) {
  return budget_k(shape.max_seq_len, sparsity.rho, sparsity.k_min, sparsity.k_multiple);
}

bool decode_supports(const DecodeShape& shape, const char** why) {
  const char* reason = nullptr;
  if (shape.head_dim != 64 && shape.head_dim != 128) {
    reason = "head dim must be 64 or 128";
  } else if (shape.dtype != DType::BF16 && shape.dtype != DType::F16) {
    reason = "dtype must be bf16 or f16";
  } else if (shape.num_kv_heads <= 0 || shape.num_q_heads % shape.num_kv_heads != 0) {
    reason = "query heads must be a multiple of kv heads";
  } else if (shape.num_q_heads / shape.num_kv_heads > cuda::kMaxGroupCap) {
    reason = "GQA group larger than 8";
  }
  if (why != nullptr) *why = reason;
  return reason == nullptr;
}

size_t decode_workspace_size(const DecodeShape& shape, Role role, const SparsityParams& sparsity) {
  return plan_decode(shape, role, sparsity).total_bytes;
}

void decode_dense(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity, Workspace ws,
                  cudaStream_t stream) {
  const DecodePlan plan = plan_decode(shape, Role::Dense, sparsity);
  check_tensors(t, shape, "decode_dense");
  check_workspace(ws, plan, "decode_dense");
  const CallContext c{t, shape, sparsity, plan, ws, stream};
  run_split_pass<cuda::DenseSplit>(c, split_params(c, plan.dense_splits));
  run_combine(c, plan.dense_splits, t.out, false);
}

void decode_layer0(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity,
                   const DecodeSelection& selection, Workspace ws, cudaStream_t stream) {
  const DecodePlan plan = plan_decode(shape, Role::Layer0, sparsity);
  check_tensors(t, shape, "decode_layer0");
  check_workspace(ws, plan, "decode_layer0");
  check_selection(selection, shape, sparsity, "decode_layer0");
  const CallContext c{t, shape, sparsity, plan, ws, stream};
  run_split_pass<cuda::Layer0Split>(c, split_params(c, plan.dense_splits));
  run_combine(c, plan.dense_splits, t.out, true);
  run_topk(c, selection);
}

void decode_anchor(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity,
                   const DecodeSelection& selection, Workspace ws, cudaStream_t stream) {
  const DecodePlan plan = plan_decode(shape, Role::Anchor, sparsity);
  check_tensors(t, shape, "decode_anchor");
  check_workspace(ws, plan, "decode_anchor");
  check_selection(selection, shape, sparsity, "decode_anchor");
  const CallContext c{t, shape, sparsity, plan, ws, stream};
  run_split_pass<cuda::ScoresSplit>(c, split_params(c, plan.dense_splits));
  run_combine(c, plan.dense_splits, nullptr, true);
  run_topk(c, selection);
  run_sparse(c, selection, nullptr);
}

void decode_reuse(const DecodeTensors& t, const DecodeShape& shape, const SparsityParams& sparsity,
                  const DecodeSelection& selection, const int32_t* head_map, Workspace ws, cudaStream_t stream) {
  const DecodePlan plan = plan_decode(shape, Role::Reuse, sparsity);
  check_tensors(t, shape, "decode_reuse");
  check_workspace(ws, plan, "decode_reuse");
  check_selection(selection, shape, sparsity, "decode_reuse");
  const CallContext c{t, shape, sparsity, plan, ws, stream};
  run_sparse(c, selection, head_map);
}

// The combine kernel is instantiated here for both storage types.
namespace cuda {
template void launch_decode_combine<__nv_bfloat16>(const DecodeCombineParams&, cudaStream_t);
template void launch_decode_combine<__half>(const DecodeCombineParams&, cudaStream_t);
}  // namespace cuda

}  // namespace kascade
