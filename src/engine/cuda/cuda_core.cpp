// The CUDA forward pass over a batch of sequences (cuda_core.h).
//
// Per layer, for the T stacked rows of a step (single-token segments first, then prefill chunks):
//   add_rms_norm (previous layer's FFN residual fused in)  -> h bf16 [T, dim]
//   GEMM h x [wq; wk; wv]^T                                 -> qkv fp32 [T, (Hq + 2 Hkv) D]
//   qkv_epilogue: bias, q/k norm, RoPE at each row's position, k/v into each row's cache slot
//   attention: one decode call (rows 0..nd-1), one prefill call (rows nd..T-1) -> att bf16
//   GEMM att x wo^T -> o fp32; add_rms_norm (x += o) -> h; GEMM h x [w_gate; w_up]^T -> fp32
//   swiglu -> bf16 [T, ffn]; GEMM x w_down^T -> o fp32 (added into x by the next norm)
// then the final norm of the rows whose logits are wanted (gathered by index) and the output GEMM.
#include "cuda_core.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/cuda_check.h"
#include "common/workspace_layout.h"
#include "kascade/attention.h"
#include "kascade/attention_prefill.h"
#include "kascade/budget.h"
#include "kascade/error.h"
#include "kascade/plan.h"
#include "kascade/tensor.h"
#include "layer_kernels.h"
#include "policy_selection.h"

#define KASCADE_CUBLAS_CHECK(call)                                                                        \
  do {                                                                                                    \
    const cublasStatus_t kascade_cublas_status_ = (call);                                                 \
    KASCADE_CHECK(kascade_cublas_status_ == CUBLAS_STATUS_SUCCESS,                                        \
                  #call << " failed: " << cublasGetStatusString(kascade_cublas_status_) << " at " << __FILE__ \
                        << ":" << __LINE__);                                                              \
  } while (0)

namespace kascade::engine {

namespace {

using cuda::bf16;
using kascade::cuda::DeviceBuffer;
using kascade::cuda::WorkspaceLayout;
using kascade::cuda::WorkspaceSlice;

constexpr int kInitialPagesPerSequence = 64;  // 1024 tokens before the first growth
constexpr int64_t kMinLengthBound = int64_t{kInitialPagesPerSequence} * kPageSize;
// cuBLAS's own workspace, fixed so that captured GEMMs never allocate (32 MiB suits Hopper).
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

int64_t next_power_of_two(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

}  // namespace

// The attention calls' launch layout of a step, the same for every layer: the two calls' shapes,
// their KV-cache geometry (each layer adds its own pools), each layer's selection (geometry and
// slot buffers; only layers with a slot have one) and the workspace.
struct StepAttention {
  DecodeShape decode;
  PrefillShape prefill;
  PagedKV decode_kv, prefill_kv;
  const int32_t* prefill_q_indptr = nullptr;  // device
  std::vector<Selection> decode_selections, prefill_selections;  // per layer
  Workspace workspace;
};

// The current step's layout: its rows, where its int32 arrays live in host_meta_ (and, at the same
// offsets, in meta_) and its attention calls. The order of the arrays puts every array of a
// decode-only step at offsets that depend on its batch size alone, so that a captured graph's
// pointers stay valid for every later step of that size.
struct CudaCore::Geometry {
  std::vector<CudaSegment>* segments = nullptr;
  int total = 0;        // rows (tokens) of the step
  int decode = 0;       // single-token segments, rows 0..decode-1
  int prefill = 0;      // longer segments, after them
  int logit_rows = 0;   // rows whose logits are computed
  bool graph = false;   // replayed from a CUDA graph
  std::vector<int> row;          // per segment: its first row
  std::vector<int> first_logit;  // per segment: its first logit row, or -1
  WorkspaceSlice<int32_t> ids, positions, slots, logit_row_ids, dec_seq_lens, dec_page_indptr, pf_seq_lens,
      pf_q_indptr, pf_page_indptr, dec_page_indices, pf_page_indices;
  size_t ints = 0;  // int32 elements of all the arrays
  StepAttention attention;
};

CudaCore::CudaCore(std::shared_ptr<const CudaWeights> weights, const Plan* plan, const BackendOptions& options,
                   const CudaOptions& cuda_options, int sequences)
    : w_(std::move(weights)),
      c_(w_->config),
      plan_(plan),
      options_(options),
      cuda_options_(cuda_options),
      sequences_(sequences) {
  KASCADE_CHECK(sequences >= 1, "backend 'cuda': batch size must be at least 1, got " << sequences);
  KASCADE_CHECK(options.prefill_chunk >= 1, "prefill chunk must be at least 1 token, got " << options.prefill_chunk);
  KASCADE_CHECK(cuda_options.reserve_tokens >= 0,
                "backend 'cuda': reserve_tokens must be >= 0, got " << cuda_options.reserve_tokens);
  const DecodeShape shape{1, c_.hq, c_.hkv, c_.head_dim, DType::BF16, 1};
  const char* why = nullptr;
  KASCADE_CHECK(decode_supports(shape, &why), "backend 'cuda': model " << c_.name << " (hq " << c_.hq << ", hkv "
                                                  << c_.hkv << ", head dim " << c_.head_dim
                                                  << ") is not supported by the attention kernels: " << why);
  KASCADE_CHECK(c_.sliding_window == 0, "backend 'cuda': model " << c_.name << " uses sliding-window attention (window "
                                                                  << c_.sliding_window
                                                                  << "), which the attention kernels do not support");
  if (plan_) {
    check_plan_matches(*plan_, c_.layers, c_.hq, c_.hkv, c_.head_dim);
    plan_schedule_ = std::make_unique<AttentionSchedule>(schedule_from_plan(*plan_));
  }
  KASCADE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  KASCADE_CUBLAS_CHECK(cublasCreate(&cublas_));
  KASCADE_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
  cublas_workspace_.reserve(kCublasWorkspaceBytes);
  KASCADE_CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_.as<void>(), kCublasWorkspaceBytes));

  k_pools_.resize(static_cast<size_t>(c_.layers));
  v_pools_.resize(static_cast<size_t>(c_.layers));
  head_maps_.resize(static_cast<size_t>(c_.layers));
  use_schedule(plan_schedule_.get());
  const int64_t reserved = round_up(cuda_options.reserve_tokens, kPageSize);
  length_bound_ = std::max(kMinLengthBound, reserved);
  const int64_t pages_per_sequence = std::max<int64_t>(kInitialPagesPerSequence, reserved / kPageSize);
  grow_pool(static_cast<int>(pages_per_sequence * sequences));
}

CudaCore::~CudaCore() {
  // Destructors cannot report failures; the device buffers free themselves afterwards.
  for (auto& entry : graphs_) cudaGraphExecDestroy(entry.second);
  if (cublas_) cublasDestroy(cublas_);
  if (stream_) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
  if (host_meta_) cudaFreeHost(host_meta_);
  if (logits_staging_) cudaFreeHost(logits_staging_);
}

void CudaCore::check_tokens(const std::vector<int32_t>& tokens) const {
  for (int32_t t : tokens) {
    KASCADE_CHECK(t >= 0 && t < c_.vocab,
                  "forward: token id " << t << " is outside the vocabulary [0, " << c_.vocab << ")");
  }
}

// ---- buffers and graphs ------------------------------------------------------------------------
void CudaCore::grow(DeviceBuffer& buffer, size_t bytes) {
  if (bytes <= buffer.bytes()) return;
  KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the old block may still be in use
  buffer.reserve(bytes);
  drop_graphs();
}

void CudaCore::drop_graphs() {
  for (auto& entry : graphs_) KASCADE_CUDA_CHECK(cudaGraphExecDestroy(entry.second));
  graphs_.clear();
}

// ---- schedules -----------------------------------------------------------------------------------
void CudaCore::set_attention_schedule(const AttentionSchedule* schedule) {
  if (schedule) {
    schedule->validate(c_.layers, c_.hkv);
    policy_schedule_ = std::make_unique<AttentionSchedule>(*schedule);
    use_schedule(policy_schedule_.get());
  } else {
    policy_schedule_.reset();
    use_schedule(plan_schedule_.get());
  }
}

// Head maps, selection slots and the budget of `schedule` (null: dense attention).
void CudaCore::use_schedule(const AttentionSchedule* schedule) {
  KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // buffers below may be in use
  drop_graphs();
  schedule_ = schedule;
  sparsity_ = schedule ? schedule->sparsity : SparsityParams{};
  chunk_ = options_.prefill_chunk;
  if (schedule) {
    // Whole tiles per chunk keep a long prompt's tiling equal to one call's (as the CPU backend).
    chunk_ = (chunk_ + sparsity_.tile - 1) / sparsity_.tile * sparsity_.tile;
  }
  selections_.resize(schedule ? static_cast<size_t>(schedule->slots) : 0);
  for (int l = 0; l < c_.layers; ++l) {
    DeviceBuffer& map = head_maps_[static_cast<size_t>(l)];
    map = DeviceBuffer();
    const LayerSchedule* ls = layer_schedule(l);
    if (!ls || ls->rule != LayerRule::Reuse || ls->head_map.empty()) continue;
    const std::vector<int32_t> map32(ls->head_map.begin(), ls->head_map.end());
    map.upload(map32.data(), map32.size() * sizeof(int32_t));
  }
}

const LayerSchedule* CudaCore::layer_schedule(int layer) const {
  return schedule_ ? &schedule_->layers[static_cast<size_t>(layer)] : nullptr;
}

SparsityParams CudaCore::layer_sparsity(const LayerSchedule& ls) const {
  SparsityParams sp = sparsity_;
  sp.pooling = ls.pooling;
  return sp;
}

// ---- KV cache ------------------------------------------------------------------------------------
void CudaCore::grow_pool(int pages) {
  if (pages <= pool_pages_) return;
  KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // growth copies on the legacy stream
  const size_t page_bytes = static_cast<size_t>(kPageSize) * c_.hkv * c_.head_dim * sizeof(uint16_t);
  for (int l = 0; l < c_.layers; ++l) {
    k_pools_[static_cast<size_t>(l)].reserve(page_bytes * pages, page_bytes * pool_pages_);
    v_pools_[static_cast<size_t>(l)].reserve(page_bytes * pages, page_bytes * pool_pages_);
  }
  for (int p = pages - 1; p >= pool_pages_; --p) free_pages_.push_back(p);
  std::sort(free_pages_.rbegin(), free_pages_.rend());
  pool_pages_ = pages;
  drop_graphs();
}

void CudaCore::ensure_pages(CudaSequence& s, int tokens) {
  const size_t needed = static_cast<size_t>((tokens + kPageSize - 1) / kPageSize);
  while (s.pages.size() < needed) {
    if (free_pages_.empty()) grow_pool(2 * pool_pages_);
    s.pages.push_back(free_pages_.back());
    free_pages_.pop_back();
  }
}

void CudaCore::release_pages(CudaSequence& s, size_t keep) {
  if (s.pages.size() <= keep) return;
  free_pages_.insert(free_pages_.end(), s.pages.begin() + static_cast<std::ptrdiff_t>(keep), s.pages.end());
  s.pages.resize(keep);
  std::sort(free_pages_.rbegin(), free_pages_.rend());
}

void CudaCore::reset(CudaSequence& s) {
  release_pages(s, 0);
  s.n = 0;
  s.stats = AttentionStats{};
}

void CudaCore::truncate(CudaSequence& s, int position) {
  KASCADE_CHECK(position >= 0 && position <= s.n,
                "truncate: position " << position << " is outside the cached 0.." << s.n << " tokens");
  // Selections never outlive the step that made them (anchors select afresh in every chunk and
  // decode step), so nothing but the cache depends on the dropped tokens.
  s.n = position;
  release_pages(s, static_cast<size_t>((position + kPageSize - 1) / kPageSize));
}

// ---- geometry ------------------------------------------------------------------------------------
DecodeShape CudaCore::decode_shape(int batch) const {
  return DecodeShape{batch, c_.hq, c_.hkv, c_.head_dim, DType::BF16, length_bound_};
}

// The cache geometry of one call of the step; layer_kv adds a layer's pools.
PagedKV CudaCore::paged_kv(int batch, const int32_t* page_indptr, const int32_t* seq_lens,
                           const int32_t* page_indices) const {
  PagedKV kv;
  kv.dtype = DType::BF16;
  kv.batch = batch;
  kv.num_kv_heads = c_.hkv;
  kv.head_dim = c_.head_dim;
  kv.page_size = kPageSize;
  kv.set_packed_strides();
  kv.page_indptr = page_indptr;
  kv.page_indices = page_indices;
  kv.seq_lens = seq_lens;
  return kv;
}

PagedKV CudaCore::layer_kv(int layer, const PagedKV& step_kv) const {
  PagedKV kv = step_kv;
  kv.k = k_pools_[static_cast<size_t>(layer)].as<bf16>();
  kv.v = v_pools_[static_cast<size_t>(layer)].as<bf16>();
  return kv;
}

void CudaCore::prepare(Geometry& g) {
  std::vector<CudaSegment>& segs = *g.segments;
  // Decode rows (single tokens, and every token of a decode-rows segment) come first.
  auto decodes = [](const CudaSegment& s) { return s.count == 1 || s.decode_rows; };
  std::stable_partition(segs.begin(), segs.end(), decodes);
  int64_t longest = 0;
  size_t dec_pages = 0, pf_pages = 0;
  bool single_tokens = true;
  for (size_t i = 0; i < segs.size(); ++i) {
    CudaSegment& sg = segs[i];
    KASCADE_CHECK(sg.seq && sg.count >= 1, "step: segment " << i << " has no tokens");
    for (size_t j = 0; j < i; ++j) {
      KASCADE_CHECK(segs[j].seq != sg.seq, "step: a sequence appears in two segments of one step");
    }
    ensure_pages(*sg.seq, sg.seq->n + sg.count);
    longest = std::max<int64_t>(longest, sg.seq->n + sg.count);
    single_tokens = single_tokens && sg.count == 1;
    if (decodes(sg)) {
      g.decode += sg.count;  // one decode entry per row, each over the sequence's page table
      dec_pages += static_cast<size_t>(sg.count) * sg.seq->pages.size();
    } else {
      g.prefill += 1;
      pf_pages += sg.seq->pages.size();
    }
    g.row.push_back(g.total);
    g.first_logit.push_back(sg.logits ? g.logit_rows : -1);
    g.total += sg.count;
    if (sg.logits) g.logit_rows += sg.all_logits ? sg.count : 1;
  }
  KASCADE_CHECK(static_cast<int>(segs.size()) <= sequences_,
                "step: " << segs.size() << " segments for a backend of " << sequences_ << " sequences");
  if (longest > length_bound_) {
    length_bound_ = next_power_of_two(longest);  // decode grids and selections are sized by it
    drop_graphs();
  }
  g.graph = cuda_options_.decode_graphs && single_tokens && !hook_ && !qk_hook_ && !override_;
  if (g.graph) g.logit_rows = g.decode;  // a graph computes every row's logits, whoever asked

  // Layout (see Geometry): consecutive int32 arrays.
  const size_t t = static_cast<size_t>(g.total), nd = static_cast<size_t>(g.decode),
               np = static_cast<size_t>(g.prefill);
  WorkspaceLayout meta_layout(sizeof(int32_t));
  g.ids = meta_layout.slice<int32_t>(t);
  g.positions = meta_layout.slice<int32_t>(t);
  g.slots = meta_layout.slice<int32_t>(t);
  g.logit_row_ids = meta_layout.slice<int32_t>(static_cast<size_t>(g.logit_rows));
  g.dec_seq_lens = meta_layout.slice<int32_t>(nd);
  g.dec_page_indptr = meta_layout.slice<int32_t>(nd + 1);
  g.pf_seq_lens = meta_layout.slice<int32_t>(np);
  g.pf_q_indptr = meta_layout.slice<int32_t>(np + 1);
  g.pf_page_indptr = meta_layout.slice<int32_t>(np + 1);
  g.dec_page_indices = meta_layout.slice<int32_t>(dec_pages);
  g.pf_page_indices = meta_layout.slice<int32_t>(pf_pages);
  g.ints = meta_layout.total_bytes() / sizeof(int32_t);
  if (g.ints > host_meta_ints_) {
    if (host_meta_) KASCADE_CUDA_CHECK(cudaFreeHost(host_meta_));
    host_meta_ = nullptr;
    const size_t ints = static_cast<size_t>(next_power_of_two(static_cast<int64_t>(g.ints)));
    KASCADE_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_meta_), ints * sizeof(int32_t)));
    host_meta_ints_ = ints;
  }
  const size_t pf_first = static_cast<size_t>(std::count_if(segs.begin(), segs.end(), decodes));
  int32_t* m = host_meta_;
  int32_t *ids = g.ids.in(m), *positions = g.positions.in(m), *slots = g.slots.in(m),
          *logit_row_ids = g.logit_row_ids.in(m), *dec_seq_lens = g.dec_seq_lens.in(m),
          *dec_page_indptr = g.dec_page_indptr.in(m), *dec_page_indices = g.dec_page_indices.in(m),
          *pf_seq_lens = g.pf_seq_lens.in(m), *pf_q_indptr = g.pf_q_indptr.in(m),
          *pf_page_indptr = g.pf_page_indptr.in(m), *pf_page_indices = g.pf_page_indices.in(m);
  dec_page_indptr[0] = 0;
  pf_q_indptr[0] = 0;
  pf_page_indptr[0] = 0;
  int32_t dec_page = 0, pf_page = 0;
  int logit = 0;
  for (size_t i = 0; i < segs.size(); ++i) {
    const CudaSegment& sg = segs[i];
    const CudaSequence& s = *sg.seq;
    for (int k = 0; k < sg.count; ++k) {
      const size_t r = static_cast<size_t>(g.row[i] + k);
      const int pos = s.n + k;
      ids[r] = sg.tokens[k];
      positions[r] = pos;
      slots[r] = s.pages[static_cast<size_t>(pos / kPageSize)] * kPageSize + pos % kPageSize;
    }
    if (g.graph || (sg.logits && sg.all_logits)) {
      for (int k = 0; k < sg.count; ++k) logit_row_ids[logit++] = g.row[i] + k;
    } else if (sg.logits) {
      logit_row_ids[logit++] = g.row[i] + sg.count - 1;
    }
    if (decodes(sg)) {
      // Row r = g.row[i] + k is decode entry r: the step at position n + k sees keys 0..n + k.
      for (int k = 0; k < sg.count; ++k) {
        const size_t b = static_cast<size_t>(g.row[i] + k);
        dec_seq_lens[b] = s.n + k + 1;
        for (int32_t p : s.pages) dec_page_indices[dec_page++] = p;
        dec_page_indptr[b + 1] = dec_page;
      }
    } else {
      const size_t b = i - pf_first;  // index within the prefill group
      pf_seq_lens[b] = s.n + sg.count;
      pf_q_indptr[b + 1] = pf_q_indptr[b] + sg.count;
      for (int32_t p : s.pages) pf_page_indices[pf_page++] = p;
      pf_page_indptr[b + 1] = pf_page;
    }
  }

  // Scratch, selections and workspace for this step.
  const size_t rows = std::max<size_t>(t, static_cast<size_t>(g.logit_rows));
  const size_t qkv_width = static_cast<size_t>(c_.hq + 2 * c_.hkv) * c_.head_dim;
  const size_t q_width = static_cast<size_t>(c_.hq) * c_.head_dim;
  grow(x_, t * c_.dim * sizeof(float));
  grow(h_, rows * c_.dim * sizeof(uint16_t));
  grow(qkv_, t * qkv_width * sizeof(float));
  grow(q_, t * q_width * sizeof(uint16_t));
  grow(att_, t * q_width * sizeof(uint16_t));
  grow(o_, t * c_.dim * sizeof(float));
  grow(gate_up_, t * 2 * c_.ffn * sizeof(float));
  grow(act_, t * c_.ffn * sizeof(uint16_t));
  grow(logits_, std::max<size_t>(g.logit_rows, 1) * c_.vocab * sizeof(float));
  grow(meta_, static_cast<size_t>(next_power_of_two(static_cast<int64_t>(g.ints))) * sizeof(int32_t));
  if (override_) {
    const size_t kv = static_cast<size_t>(longest) * c_.hkv * c_.head_dim * sizeof(uint16_t);
    grow(kv_gather_k_, kv);
    grow(kv_gather_v_, kv);
  }
  if (!override_) lay_out_attention(g);
}

// The attention calls of the step, made once for all its layers: shapes, KV-cache geometry,
// selection buffers (grown to the step) and each layer's selection, the workspace.
void CudaCore::lay_out_attention(Geometry& g) {
  StepAttention& a = g.attention;
  const int32_t* m = host_meta_;
  const int32_t* meta = meta_.as<int32_t>();
  a.decode = decode_shape(g.decode);
  a.prefill = PrefillShape{g.prefill, c_.hq, c_.hkv, c_.head_dim, DType::BF16, g.pf_q_indptr.in(m),
                           g.pf_seq_lens.in(m)};
  a.decode_kv = paged_kv(g.decode, g.dec_page_indptr.in(meta), g.dec_seq_lens.in(meta), g.dec_page_indices.in(meta));
  a.prefill_kv = paged_kv(g.prefill, g.pf_page_indptr.in(meta), g.pf_seq_lens.in(meta), g.pf_page_indices.in(meta));
  a.prefill_q_indptr = g.pf_q_indptr.in(meta);

  // Buffers and the workspace are sized for one set per kv head (group pooling needs the most).
  const auto pooled = [this](Pooling pooling) {
    SparsityParams sp = sparsity_;
    sp.pooling = pooling;
    return sp;
  };
  const SparsityParams sizing = pooled(Pooling::Group);
  if (schedule_) {
    if (g.decode > 0) {
      // Decode-rows steps can hold more rows than the backend has sequences.
      const Selection most = decode_selection(decode_shape(std::max(sequences_, g.decode)), sizing);
      for (SelectionSlot& slot : selections_) {
        grow(slot.decode_indices, static_cast<size_t>(std::max<int64_t>(most.indices_count(), 1)) * sizeof(int32_t));
        grow(slot.decode_counts, static_cast<size_t>(std::max<int64_t>(most.counts_count(), 1)) * sizeof(int32_t));
      }
    }
    if (g.prefill > 0) {
      const Selection most = prefill_selection(a.prefill, sizing);
      for (SelectionSlot& slot : selections_) {
        // Prefill selections are never read by a graph: growing them need not drop the graphs.
        slot.prefill_indices.reserve(static_cast<size_t>(std::max<int64_t>(most.indices_count(), 1)) * sizeof(int32_t));
        slot.prefill_counts.reserve(static_cast<size_t>(std::max<int64_t>(most.counts_count(), 1)) * sizeof(int32_t));
      }
    }
  }
  size_t workspace = 0;
  if (g.decode > 0) {
    for (Role role : {Role::Dense, Role::Layer0, Role::Anchor, Role::Reuse}) {
      if (role == Role::Dense || schedule_) {
        workspace = std::max(workspace, decode_workspace_size(a.decode, role, sizing));
      }
    }
  }
  if (g.prefill > 0 && schedule_) {
    workspace = std::max(workspace, prefill_workspace_size(a.prefill, Role::Anchor, sizing));
  }
  grow(workspace_, workspace);
  a.workspace = Workspace{workspace_.as<void>(), workspace_.bytes()};

  // Each layer's selection: its pooling's geometry in its slot's buffers (after any growth above).
  a.decode_selections.assign(static_cast<size_t>(c_.layers), Selection{});
  a.prefill_selections.assign(static_cast<size_t>(c_.layers), Selection{});
  if (!schedule_) return;
  Selection decode_by_pooling[2], prefill_by_pooling[2];
  for (Pooling pooling : {Pooling::Group, Pooling::All}) {
    const int p = static_cast<int>(pooling);
    if (g.decode > 0) decode_by_pooling[p] = decode_selection(a.decode, pooled(pooling));
    if (g.prefill > 0) prefill_by_pooling[p] = prefill_selection(a.prefill, pooled(pooling));
  }
  for (int l = 0; l < c_.layers; ++l) {
    const LayerSchedule* ls = layer_schedule(l);
    if (!ls || ls->slot < 0) continue;
    SelectionSlot& slot = selections_[static_cast<size_t>(ls->slot)];
    Selection& dec = a.decode_selections[static_cast<size_t>(l)];
    dec = decode_by_pooling[static_cast<int>(ls->pooling)];
    dec.indices = slot.decode_indices.as<int32_t>();
    dec.counts = slot.decode_counts.as<int32_t>();
    Selection& pf = a.prefill_selections[static_cast<size_t>(l)];
    pf = prefill_by_pooling[static_cast<int>(ls->pooling)];
    pf.indices = slot.prefill_indices.as<int32_t>();
    pf.counts = slot.prefill_counts.as<int32_t>();
  }
}

void CudaCore::upload_geometry(const Geometry& g) {
  KASCADE_CUDA_CHECK(cudaMemcpyAsync(meta_.as<int32_t>(), host_meta_, g.ints * sizeof(int32_t),
                                     cudaMemcpyHostToDevice, stream_));
}

// ---- the step --------------------------------------------------------------------------------------
void CudaCore::step(std::vector<CudaSegment>& segments) {
  if (segments.empty()) return;
  Geometry g;
  g.segments = &segments;
  prepare(g);
  upload_geometry(g);
  if (g.graph) {
    replay_graph(g);
  } else {
    run_forward(g);
  }
  if (g.logit_rows > 0) {
    const size_t floats = static_cast<size_t>(g.logit_rows) * c_.vocab;
    if (floats > logits_staging_floats_) {
      if (logits_staging_) KASCADE_CUDA_CHECK(cudaFreeHost(logits_staging_));
      logits_staging_ = nullptr;
      KASCADE_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&logits_staging_), floats * sizeof(float)));
      logits_staging_floats_ = floats;
    }
    KASCADE_CUDA_CHECK(cudaMemcpyAsync(logits_staging_, logits_.as<float>(), floats * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_));
  }
  KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (size_t i = 0; i < segments.size(); ++i) {
    CudaSegment& sg = segments[i];
    if (sg.logits) {
      // A graph step computed every row; a segment's rows are its own in either layout.
      const int rows = sg.all_logits ? sg.count : 1;
      const int first = g.graph ? g.row[i] + (sg.count - rows) : g.first_logit[i];
      const size_t floats = static_cast<size_t>(rows) * c_.vocab;
      const float* src = logits_staging_ + static_cast<size_t>(first) * c_.vocab;
      // A non-finite logit means the weights or the arithmetic went wrong: say so, never pass it on.
      for (int row = 0; row < rows; ++row) {
        const float* logit = src + static_cast<size_t>(row) * c_.vocab;
        for (int v = 0; v < c_.vocab; ++v) {
          KASCADE_CHECK(std::isfinite(logit[v]), "backend 'cuda': logit " << v << " of position "
                                                                          << sg.seq->n + sg.count - rows + row
                                                                          << " is not finite (" << logit[v] << ")");
        }
      }
      std::memcpy(sg.logits, src, floats * sizeof(float));
    }
    if (!override_) count_keys(sg);
    sg.seq->n += sg.count;
  }
}

void CudaCore::replay_graph(const Geometry& g) {
  auto found = graphs_.find(g.decode);
  if (found == graphs_.end()) {
    cudaGraph_t graph = nullptr;
    // Relaxed: the kernels' one-time setup (cudaFuncSetAttribute on first use) may run inside
    // the capture; anything that waits on the stream still fails it, and is reported below.
    KASCADE_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
    try {
      run_forward(g);
    } catch (const std::exception& e) {
      cudaStreamEndCapture(stream_, &graph);  // ends the failed capture; its error is the one to report
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      KASCADE_FAIL("backend 'cuda': capturing the decode step of "
                   << g.decode << " sequence(s) in a CUDA graph failed (" << e.what()
                   << "); run without graphs (CudaOptions::decode_graphs = false, kascade generate --no-cuda-graphs)");
    }
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    cudaGraphExec_t exec = nullptr;
    const cudaError_t made = ended == cudaSuccess ? cudaGraphInstantiate(&exec, graph, 0) : ended;
    if (graph) cudaGraphDestroy(graph);
    KASCADE_CHECK(made == cudaSuccess, "backend 'cuda': capturing the decode step of "
                                           << g.decode << " sequence(s) in a CUDA graph failed ("
                                           << cudaGetErrorString(made)
                                           << "); run without graphs (CudaOptions::decode_graphs = false, kascade "
                                              "generate --no-cuda-graphs)");
    found = graphs_.emplace(g.decode, exec).first;
    ++graphs_captured_;
  }
  KASCADE_CUDA_CHECK(cudaGraphLaunch(found->second, stream_));
  ++graph_replays_;
}

void CudaCore::gemm(const bf16* x, int rows, int in, const bf16* w, int out, float* y) {
  // One row (a decode step of one sequence) streams the weights through gemv (layer_kernels.h).
  if (rows == 1) {
    cuda::gemv(x, in, w, out, y, stream_);
    return;
  }
  // Row-major y[rows][out] = x[rows][in] * w[out][in]^T, i.e. column-major y^T = w^T(op T) x^T.
  const float one = 1.f, zero = 0.f;
  KASCADE_CUBLAS_CHECK(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &one, w, CUDA_R_16BF, in, x,
                                    CUDA_R_16BF, in, &zero, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT));
}

void CudaCore::run_forward(const Geometry& g) {
  const int dim = c_.dim, qkv_width = (c_.hq + 2 * c_.hkv) * c_.head_dim, q_width = c_.hq * c_.head_dim;
  const int count = g.total;
  const int32_t* meta = meta_.as<int32_t>();
  float* x = x_.as<float>();
  bf16* h = h_.as<bf16>();
  float* o = o_.as<float>();
  cuda::embed_rows(g.ids.in(meta), count, w_->token_embd.as<bf16>(), dim, x, stream_);
  const float* pending = nullptr;  // the previous layer's FFN output, added by the next norm
  for (int l = 0; l < c_.layers; ++l) {
    const CudaLayerWeights& w = w_->layers[static_cast<size_t>(l)];
    cuda::add_rms_norm(x, pending, w.attn_norm.as<float>(), nullptr, count, dim, c_.rms_eps, h, stream_);
    gemm(h, count, dim, w.wqkv.as<bf16>(), qkv_width, qkv_.as<float>());
    cuda::QkvEpilogueParams e;
    e.qkv = qkv_.as<float>();
    e.bias = c_.qkv_bias ? w.bqkv.as<float>() : nullptr;
    e.q_norm = c_.qk_norm ? w.q_norm.as<float>() : nullptr;
    e.k_norm = c_.qk_norm ? w.k_norm.as<float>() : nullptr;
    e.inv_freq = w_->inv_freq.as<float>();
    e.position_scale = c_.rope_position_scale;
    e.pairs = c_.rope_style == RopeStyle::Adjacent ? cuda::RopePairs::Adjacent : cuda::RopePairs::Halves;
    e.eps = c_.rms_eps;
    e.tokens = count;
    e.hq = c_.hq;
    e.hkv = c_.hkv;
    e.head_dim = c_.head_dim;
    e.positions = g.positions.in(meta);
    e.slots = g.slots.in(meta);
    e.q_out = q_.as<bf16>();
    e.k_pool = k_pools_[static_cast<size_t>(l)].as<bf16>();
    e.v_pool = v_pools_[static_cast<size_t>(l)].as<bf16>();
    e.page_size = kPageSize;
    e.token_stride = static_cast<int64_t>(c_.hkv) * c_.head_dim;
    e.page_stride = e.token_stride * kPageSize;
    cuda::qkv_epilogue(e, stream_);
    if (qk_hook_) call_query_key_hook(l, g);
    attention(l, g);
    gemm(att_.as<bf16>(), count, q_width, w.wo.as<bf16>(), dim, o);
    if (hook_) call_attention_hook(l, g);
    cuda::add_rms_norm(x, o, w.ffn_norm.as<float>(), nullptr, count, dim, c_.rms_eps, h, stream_);
    gemm(h, count, dim, w.w_gate_up.as<bf16>(), 2 * c_.ffn, gate_up_.as<float>());
    cuda::swiglu(gate_up_.as<float>(), count, c_.ffn, act_.as<bf16>(), stream_);
    gemm(act_.as<bf16>(), count, c_.ffn, w.w_down.as<bf16>(), dim, o);
    pending = o;
  }
  if (g.logit_rows > 0) {
    cuda::add_rms_norm(x, pending, w_->output_norm.as<float>(), g.logit_row_ids.in(meta), g.logit_rows, dim, c_.rms_eps,
                       h, stream_);
    gemm(h, g.logit_rows, dim, w_->output_matrix(), c_.vocab, logits_.as<float>());
  }
}

// ---- attention -------------------------------------------------------------------------------------
void CudaCore::attention(int layer, const Geometry& g) {
  if (override_) {
    overridden_attention(layer, g);
    return;
  }
  if (g.decode > 0) decode_attention(layer, g);
  if (g.prefill > 0) prefill_attention(layer, g);
}

// The calls of one phase by role: decode and prefill take the same arguments (attention.h).
template <typename Tensors, typename Shape>
struct PhaseCalls {
  void (*dense)(const Tensors&, const Shape&, const SparsityParams&, Workspace, cudaStream_t);
  void (*layer0)(const Tensors&, const Shape&, const SparsityParams&, const Selection&, Workspace, cudaStream_t);
  void (*anchor)(const Tensors&, const Shape&, const SparsityParams&, const Selection&, Workspace, cudaStream_t);
  void (*reuse)(const Tensors&, const Shape&, const SparsityParams&, const Selection&, const int32_t*, Workspace,
                cudaStream_t);
};

// One layer's call of either phase by its rule; `dense_only`: the schedule runs this phase densely.
template <typename Tensors, typename Shape>
void CudaCore::attend_layer(int layer, const PhaseCalls<Tensors, Shape>& calls, const Tensors& t, const Shape& shape,
                            const std::vector<Selection>& selections, Workspace ws, bool dense_only) {
  const LayerSchedule* ls = layer_schedule(layer);
  if (!ls || ls->rule == LayerRule::Dense || dense_only) {
    calls.dense(t, shape, sparsity_, ws, stream_);
    return;
  }
  const SparsityParams sp = layer_sparsity(*ls);
  // The slot's buffers are sized for the step's largest call; this geometry follows this call's.
  const Selection& sel = selections[static_cast<size_t>(layer)];
  switch (ls->rule) {
    case LayerRule::Dense: break;
    case LayerRule::DenseSelect: calls.layer0(t, shape, sp, sel, ws, stream_); break;
    case LayerRule::Select: calls.anchor(t, shape, sp, sel, ws, stream_); break;
    case LayerRule::Reuse:
      calls.reuse(t, shape, sp, sel, head_maps_[static_cast<size_t>(layer)].as<int32_t>(), ws, stream_);
      break;
    case LayerRule::Streaming:
    case LayerRule::Quest:
      select_by_policy(layer, *ls, t, shape, sp, sel);
      calls.reuse(t, shape, sp, sel, nullptr, ws, stream_);
      break;
  }
}

void CudaCore::select_by_policy(int, const LayerSchedule& ls, const DecodeTensors& t, const DecodeShape& shape,
                                const SparsityParams& sp, const Selection& sel) {
  const cuda::policy_select::Args a{t.q, t.kv, c_.hq, shape.max_seq_len, sp, sel};
  if (ls.rule == LayerRule::Streaming) {
    cuda::policy_select::streaming(a, stream_);
  } else {
    cuda::policy_select::quest(a, stream_);
  }
}

void CudaCore::select_by_policy(int layer, const LayerSchedule& ls, const PrefillTensors&, const PrefillShape&,
                                const SparsityParams&, const Selection&) {
  KASCADE_FAIL("backend 'cuda': schedule '" << schedule_->name << "' layer " << layer << " (" << to_string(ls.rule)
                                            << ") has no prefill kernel; run it with dense prefill");
}

// The decode call of a step: rows 0..decode-1.
void CudaCore::decode_attention(int layer, const Geometry& g) {
  static const PhaseCalls<DecodeTensors, DecodeShape> calls{decode_dense, decode_layer0, decode_anchor, decode_reuse};
  const StepAttention& step = g.attention;
  const DecodeTensors t{q_.as<bf16>(), att_.as<bf16>(), layer_kv(layer, step.decode_kv), c_.hq};
  attend_layer(layer, calls, t, step.decode, step.decode_selections, step.workspace, /*dense_only=*/false);
}

// The prefill call of a step: rows decode..total-1, the prefill group's geometry.
void CudaCore::prefill_attention(int layer, const Geometry& g) {
  static const PhaseCalls<PrefillTensors, PrefillShape> calls{prefill_dense, prefill_layer0, prefill_anchor,
                                                              prefill_reuse};
  const StepAttention& step = g.attention;
  const size_t first = static_cast<size_t>(g.decode) * c_.hq * c_.head_dim;
  const PrefillTensors t{q_.as<bf16>() + first, att_.as<bf16>() + first, layer_kv(layer, step.prefill_kv), c_.hq,
                         step.prefill_q_indptr};
  attend_layer(layer, calls, t, step.prefill, step.prefill_selections, step.workspace,
               schedule_ && schedule_->prefill_dense);
}

// Copies cache rows first..first+count-1 of sequence s (bf16 [count, Hkv, D]) from a layer's pool,
// one run of consecutive pages at a time.
void CudaCore::copy_cache_rows(const DeviceBuffer& pool, const CudaSequence& s, int first, int count, void* dst,
                               cudaMemcpyKind kind) {
  const size_t row_bytes = static_cast<size_t>(c_.hkv) * c_.head_dim * sizeof(uint16_t);
  const char* base = pool.as<const char>();
  char* out = static_cast<char*>(dst);
  for (int pos = first; pos < first + count;) {
    const int64_t slot = int64_t{s.pages[static_cast<size_t>(pos / kPageSize)]} * kPageSize + pos % kPageSize;
    int run = std::min(kPageSize - pos % kPageSize, first + count - pos);
    // Extend the run across pages that follow each other in the pool.
    while (pos + run < first + count &&
           int64_t{s.pages[static_cast<size_t>((pos + run) / kPageSize)]} * kPageSize == slot + run) {
      run += std::min(kPageSize, first + count - pos - run);
    }
    KASCADE_CUDA_CHECK(cudaMemcpyAsync(out, base + slot * row_bytes, run * row_bytes, kind, stream_));
    out += run * row_bytes;
    pos += run;
  }
}

// The override on the host, one segment at a time, over its sequence's rows 0..n+count-1 gathered
// into contiguous buffers (HostAttention reads a contiguous cache).
void CudaCore::overridden_attention(int layer, const Geometry& g) {
  const cuda::AttentionShape shape{c_.hq, c_.hkv, c_.head_dim};
  const size_t q_row = static_cast<size_t>(c_.hq) * c_.head_dim;
  for (size_t i = 0; i < g.segments->size(); ++i) {
    const CudaSegment& sg = (*g.segments)[i];
    CudaSequence& s = *sg.seq;
    const int n = s.n + sg.count;
    copy_cache_rows(k_pools_[static_cast<size_t>(layer)], s, 0, n, kv_gather_k_.as<void>(), cudaMemcpyDeviceToDevice);
    copy_cache_rows(v_pools_[static_cast<size_t>(layer)], s, 0, n, kv_gather_v_.as<void>(), cudaMemcpyDeviceToDevice);
    const size_t first = static_cast<size_t>(g.row[i]) * q_row;
    s.stats.keys_read += host_attention_.run(override_, layer, s.n, sg.count, shape, q_.as<bf16>() + first,
                                             kv_gather_k_.as<bf16>(), kv_gather_v_.as<bf16>(), att_.as<bf16>() + first,
                                             stream_);
    for (int64_t t = s.n; t < n; ++t) s.stats.keys_dense += static_cast<double>(t + 1) * c_.hq;
  }
}

// The hook sees the bf16 q and k that attention reads, widened to fp32, one segment at a time.
void CudaCore::call_query_key_hook(int layer, const Geometry& g) {
  for (size_t i = 0; i < g.segments->size(); ++i) {
    const CudaSegment& sg = (*g.segments)[i];
    const size_t q_elems = static_cast<size_t>(sg.count) * c_.hq * c_.head_dim;
    const size_t k_elems = static_cast<size_t>(sg.count) * c_.hkv * c_.head_dim;
    hook_raw_q_.resize(q_elems);
    hook_raw_k_.resize(k_elems);
    KASCADE_CUDA_CHECK(cudaMemcpyAsync(hook_raw_q_.data(),
                                       q_.as<bf16>() + static_cast<size_t>(g.row[i]) * c_.hq * c_.head_dim,
                                       q_elems * sizeof(uint16_t), cudaMemcpyDeviceToHost, stream_));
    copy_cache_rows(k_pools_[static_cast<size_t>(layer)], *sg.seq, sg.seq->n, sg.count, hook_raw_k_.data(),
                    cudaMemcpyDeviceToHost);
    KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    hook_q_.resize(q_elems);
    hook_k_.resize(k_elems);
    std::transform(hook_raw_q_.begin(), hook_raw_q_.end(), hook_q_.begin(), bf16_to_float);
    std::transform(hook_raw_k_.begin(), hook_raw_k_.end(), hook_k_.begin(), bf16_to_float);
    qk_hook_(layer, sg.seq->n, sg.count, hook_q_.data(), hook_k_.data());
  }
}

void CudaCore::call_attention_hook(int layer, const Geometry& g) {
  for (size_t i = 0; i < g.segments->size(); ++i) {
    const CudaSegment& sg = (*g.segments)[i];
    const size_t n = static_cast<size_t>(sg.count) * c_.dim, first = static_cast<size_t>(g.row[i]) * c_.dim;
    hook_residual_.resize(n);
    hook_attn_.resize(n);
    KASCADE_CUDA_CHECK(cudaMemcpyAsync(hook_residual_.data(), x_.as<float>() + first, n * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_));
    KASCADE_CUDA_CHECK(cudaMemcpyAsync(hook_attn_.data(), o_.as<float>() + first, n * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_));
    KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    hook_(layer, sg.count, c_.dim, hook_residual_.data(), hook_attn_.data());
  }
}

// Keys read, counted as the CPU backend counts them (backend.h AttentionStats), from the same
// budget arithmetic the kernels use (budget.h): a layer that reads only a selection reads it
// (decode) or, per tile, the selection plus the diagonal (prefill); the others, anchors among
// them (they rank every key), read every key.
void CudaCore::count_keys(const CudaSegment& segment) {
  AttentionStats& stats = segment.seq->stats;
  const int64_t p0 = segment.seq->n, p1 = p0 + segment.count;
  double dense = 0;
  for (int64_t t = p0; t < p1; ++t) dense += static_cast<double>(t + 1) * c_.hq;
  double sparse = dense;
  const bool prefill = segment.count > 1 && !segment.decode_rows;
  if (schedule_ && !(prefill && schedule_->prefill_dense)) {
    const SparsityParams& sp = sparsity_;
    sparse = 0;
    if (!prefill) {
      for (int64_t t = p0; t < p1; ++t) sparse += static_cast<double>(c_.hq) * budget_k(t + 1, sp.rho, sp.k_min, sp.k_multiple);
    } else {
      const int64_t tiles = num_tiles(p0, p1, sp.tile);
      for (int64_t tau = 0; tau < tiles; ++tau) {
        const int64_t b = tile_begin(p0, tau, sp.tile), e = tile_end(p0, p1, tau, sp.tile);
        const int64_t k = tile_budget(sp.rolling(), b, p1, sp.rho, sp.k_min, sp.k_multiple);
        for (int64_t t = b; t < e; ++t) sparse += static_cast<double>(c_.hq) * (k + (t - b + 1));
      }
    }
  }
  for (int l = 0; l < c_.layers; ++l) {
    stats.keys_dense += dense;
    stats.keys_read += schedule_ && schedule_->reads_selection_only(l) ? sparse : dense;
  }
}

}  // namespace kascade::engine
