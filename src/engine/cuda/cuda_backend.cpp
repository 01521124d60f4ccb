// The CUDA backend (cuda_backend.h): a Llama-family forward pass over one sequence on the GPU.
//
// Per layer, for a chunk of T tokens at positions n..n+T-1:
//   add_rms_norm (previous layer's FFN residual fused in)  -> h bf16 [T, dim]
//   GEMM h x [wq; wk; wv]^T                                 -> qkv fp32 [T, (Hq + 2 Hkv) D]
//   qkv_epilogue: bias, q/k norm, RoPE, k/v into the paged cache, q bf16 [T, Hq, D]
//   attention by the plan's role (src/cuda kernels)         -> att bf16 [T, Hq, D]
//   GEMM att x wo^T -> o fp32; add_rms_norm (x += o) -> h; GEMM h x [w_gate; w_up]^T -> fp32
//   swiglu -> bf16 [T, ffn]; GEMM x w_down^T -> o fp32 (added into x by the next norm)
// A chunk of one token is a decode step (decode_* calls), longer chunks are prefill
// (prefill_* calls), exactly as the CPU backend splits them, so both compute the same SPEC roles.
//
// The KV cache is paged (kPageSize tokens a page) with one page pool per layer; the sequence's
// page table is the identity over the pool, which grows by doubling (pages are copied, so their
// indices stay valid). Selections live in one device buffer per anchor, written by the anchor's
// call and read by its reuse layers within the same chunk.
//
// With an attention override (backend.h) every layer's attention is the caller's, computed on the
// host from the step's q and the cache rows (host_attention.h); truncate() cuts the cache back.
#include "kascade/engine/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/cuda_check.h"
#include "device_buffer.h"
#include "host_attention.h"
#include "kascade/attention.h"
#include "kascade/attention_prefill.h"
#include "kascade/budget.h"
#include "kascade/engine/model.h"
#include "kascade/error.h"
#include "kascade/plan.h"
#include "kascade/tensor.h"
#include "layer_kernels.h"

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
using cuda::DeviceBuffer;

constexpr int kPageSize = 16;          // tokens per KV page (DESIGN's default)
constexpr int kInitialPages = 64;      // 1024 tokens before the first growth

// Uploads the row-wise concatenation of fp32 matrices as one bf16 matrix (round to nearest even).
DeviceBuffer upload_bf16(std::initializer_list<const std::vector<float>*> parts) {
  size_t total = 0;
  for (const std::vector<float>* p : parts) total += p->size();
  std::vector<uint16_t> packed;
  packed.reserve(total);
  for (const std::vector<float>* p : parts) {
    for (float f : *p) packed.push_back(float_to_bf16(f));
  }
  DeviceBuffer b;
  b.upload(packed.data(), packed.size() * sizeof(uint16_t));
  return b;
}

DeviceBuffer upload_f32(const std::vector<float>& v) {
  DeviceBuffer b;
  if (!v.empty()) b.upload(v.data(), v.size() * sizeof(float));
  return b;
}

DeviceBuffer upload_i32(const std::vector<int32_t>& v) {
  DeviceBuffer b;
  b.upload(v.data(), v.size() * sizeof(int32_t));
  return b;
}

struct DeviceLayer {
  DeviceBuffer attn_norm, wqkv, bqkv, q_norm, k_norm, wo, ffn_norm, w_gate_up, w_down;
  DeviceBuffer k_pool, v_pool;  // [pages, kPageSize, Hkv, D] bf16 each
  DeviceBuffer head_map;        // [Hkv] int32 (reuse layers of a plan)
};

// Host-side bookkeeping of one anchor's device selection buffer.
struct SelectionSlot {
  DeviceBuffer indices, counts;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(const Model& model, const Plan* plan, const BackendOptions& options)
      : m_(model), c_(model.config), plan_(plan), options_(options) {
    KASCADE_CHECK(options.prefill_chunk >= 1, "prefill chunk must be at least 1 token, got " << options.prefill_chunk);
    int devices = 0;
    const cudaError_t probe = cudaGetDeviceCount(&devices);
    KASCADE_CHECK(probe == cudaSuccess && devices > 0,
                  "backend 'cuda': no CUDA device is available (" << cudaGetErrorString(probe) << ")");
    const DecodeShape shape{1, c_.hq, c_.hkv, c_.head_dim, DType::BF16, 1};
    const char* why = nullptr;
    KASCADE_CHECK(decode_supports(shape, &why), "backend 'cuda': model " << c_.name << " (hq " << c_.hq << ", hkv "
                                                    << c_.hkv << ", head dim " << c_.head_dim
                                                    << ") is not supported by the attention kernels: " << why);
    chunk_ = options.prefill_chunk;
    if (plan_) {
      check_plan_matches(*plan_, c_.layers, c_.hq, c_.hkv, c_.head_dim);
      // Whole tiles per chunk keep a long prompt's tiling equal to one call's (as the CPU backend).
      chunk_ = (chunk_ + plan_->tile - 1) / plan_->tile * plan_->tile;
      sparsity_ = plan_->params();
      selections_.resize(plan_->anchors.size());
    }
    KASCADE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    KASCADE_CUBLAS_CHECK(cublasCreate(&cublas_));
    KASCADE_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    upload_weights();
  }

  ~CudaBackend() override {
    // Destructors cannot report failures; the device buffers free themselves afterwards.
    if (cublas_) cublasDestroy(cublas_);
    if (stream_) {
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
    }
  }

  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  const char* name() const override { return "cuda"; }
  void reset() override {
    n_ = 0;
    stats_ = AttentionStats{};
  }
  int position() const override { return n_; }
  AttentionStats stats() const override { return stats_; }
  void set_attention_hook(AttentionHook hook) override { hook_ = std::move(hook); }
  void set_query_key_hook(QueryKeyHook hook) override { qk_hook_ = std::move(hook); }
  void set_attention_override(AttentionOverride attention) override { override_ = std::move(attention); }
  // Cache rows past `position` are overwritten by the next forward(). Selections never outlive
  // the chunk that made them (an anchor selects afresh in every chunk and decode step, and its
  // reuse layers read it within that chunk), so with a plan nothing depends on dropped tokens.
  void truncate(int position) override {
    KASCADE_CHECK(position >= 0 && position <= n_,
                  "truncate: position " << position << " is outside the cached 0.." << n_ << " tokens");
    n_ = position;
  }

  std::vector<float> forward(const std::vector<int32_t>& tokens, bool all_logits) override {
    KASCADE_CHECK(!tokens.empty(), "forward: no tokens");
    for (int32_t t : tokens) {
      KASCADE_CHECK(t >= 0 && t < c_.vocab, "forward: token id " << t << " is outside the vocabulary [0, " << c_.vocab << ")");
    }
    const int total = static_cast<int>(tokens.size());
    std::vector<float> logits(static_cast<size_t>(all_logits ? total : 1) * c_.vocab);
    for (int done = 0; done < total;) {
      const int count = std::min(chunk_, total - done);
      const bool last = done + count == total;
      float* out = all_logits ? logits.data() + static_cast<size_t>(done) * c_.vocab : (last ? logits.data() : nullptr);
      forward_chunk(tokens.data() + done, count, out, all_logits);
      done += count;
      if (options_.on_prefill_progress && total > 1) options_.on_prefill_progress(done, total);
    }
    for (size_t i = 0; i < logits.size(); ++i) {
      KASCADE_CHECK(std::isfinite(logits[i]), "backend 'cuda': logit " << i % c_.vocab << " of row " << i / c_.vocab
                                                                       << " is not finite (" << logits[i] << ")");
    }
    return logits;
  }

 private:
  // ---- weights -----------------------------------------------------------------------------------
  void upload_weights() {
    layers_.resize(static_cast<size_t>(c_.layers));
    for (int l = 0; l < c_.layers; ++l) {
      const LayerWeights& w = m_.layers[static_cast<size_t>(l)];
      DeviceLayer& d = layers_[static_cast<size_t>(l)];
      d.attn_norm = upload_f32(w.attn_norm);
      d.wqkv = upload_bf16({&w.wq, &w.wk, &w.wv});
      if (c_.qkv_bias) {
        std::vector<float> bias(w.bq);
        bias.insert(bias.end(), w.bk.begin(), w.bk.end());
        bias.insert(bias.end(), w.bv.begin(), w.bv.end());
        d.bqkv = upload_f32(bias);
      }
      if (c_.qk_norm) {
        d.q_norm = upload_f32(w.q_norm);
        d.k_norm = upload_f32(w.k_norm);
      }
      d.wo = upload_bf16({&w.wo});
      d.ffn_norm = upload_f32(w.ffn_norm);
      d.w_gate_up = upload_bf16({&w.w_gate, &w.w_up});
      d.w_down = upload_bf16({&w.w_down});
      if (plan_ && plan_->role_of(l) == Role::Reuse) {
        const std::vector<int>& map = plan_->head_map[static_cast<size_t>(l)];
        d.head_map = upload_i32(std::vector<int32_t>(map.begin(), map.end()));
      }
    }
    token_embd_ = upload_bf16({&m_.token_embd});
    if (!m_.output.empty()) output_ = upload_bf16({&m_.output});
    output_norm_ = upload_f32(m_.output_norm);
    // RoPE frequencies in fp32 exactly as the CPU backend computes them (llama3 factors divide).
    const int half = c_.head_dim / 2;
    std::vector<float> inv_freq(static_cast<size_t>(half));
    for (int i = 0; i < half; ++i) {
      float f = static_cast<float>(1.0 / std::pow(static_cast<double>(c_.rope_base), 2.0 * i / c_.head_dim));
      if (!c_.rope_freq_factors.empty()) f /= c_.rope_freq_factors[static_cast<size_t>(i)];
      inv_freq[static_cast<size_t>(i)] = f;
    }
    inv_freq_ = upload_f32(inv_freq);
    // Per-call geometry, read by the kernels: seq_lens [1], q_indptr [2], page_indptr [2].
    meta_.reserve(sizeof(int32_t) * kMetaInts);
  }

  const bf16* output_matrix() const { return output_.empty() ? token_embd_.as<bf16>() : output_.as<bf16>(); }

  // ---- KV cache -------------------------------------------------------------------------------------
  int64_t capacity_tokens() const { return static_cast<int64_t>(pages_) * kPageSize; }

  void reserve_tokens(int needed) {
    if (needed <= capacity_tokens()) return;
    int pages = std::max(kInitialPages, pages_);
    while (static_cast<int64_t>(pages) * kPageSize < needed) pages *= 2;
    KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // growth copies on the legacy stream
    const size_t page_bytes = static_cast<size_t>(kPageSize) * c_.hkv * c_.head_dim * sizeof(uint16_t);
    for (DeviceLayer& d : layers_) {
      d.k_pool.reserve(page_bytes * pages, page_bytes * pages_);
      d.v_pool.reserve(page_bytes * pages, page_bytes * pages_);
    }
    std::vector<int32_t> identity(static_cast<size_t>(pages));
    for (int p = 0; p < pages; ++p) identity[static_cast<size_t>(p)] = p;
    page_table_.reserve(identity.size() * sizeof(int32_t));
    KASCADE_CUDA_CHECK(cudaMemcpy(page_table_.as<int32_t>(), identity.data(), identity.size() * sizeof(int32_t),
                                  cudaMemcpyHostToDevice));
    pages_ = pages;
  }

  // ---- scratch ------------------------------------------------------------------------------------
  void reserve_scratch(int tokens, int logit_rows) {
    const size_t t = static_cast<size_t>(tokens);
    const size_t qkv_width = static_cast<size_t>(c_.hq + 2 * c_.hkv) * c_.head_dim;
    const size_t q_width = static_cast<size_t>(c_.hq) * c_.head_dim;
    ids_.reserve(t * sizeof(int32_t));
    x_.reserve(t * c_.dim * sizeof(float));
    h_.reserve(t * c_.dim * sizeof(uint16_t));
    qkv_.reserve(t * qkv_width * sizeof(float));
    q_.reserve(t * q_width * sizeof(uint16_t));
    att_.reserve(t * q_width * sizeof(uint16_t));
    o_.reserve(t * c_.dim * sizeof(float));
    gate_up_.reserve(t * 2 * c_.ffn * sizeof(float));
    act_.reserve(t * c_.ffn * sizeof(uint16_t));
    logits_.reserve(static_cast<size_t>(logit_rows) * c_.vocab * sizeof(float));
  }

  // Sizes every anchor's selection buffer for this chunk (decode or prefill layout).
  void reserve_selections(int count) {
    if (!plan_) return;
    int64_t index_count = 0, count_count = 0;
    if (count == 1) {
      const DecodeShape shape = decode_shape();
      const int64_t sets = decode_selection_sets(shape, sparsity_);
      index_count = sets * decode_selection_kmax(shape, sparsity_);
      count_count = sets;
    } else {
      const SelectionShape s = prefill_selection_shape(prefill_batch(), c_.hkv, sparsity_);
      index_count = s.indices_count();
      count_count = s.counts_count();
    }
    for (SelectionSlot& slot : selections_) {
      slot.indices.reserve(static_cast<size_t>(std::max<int64_t>(index_count, 1)) * sizeof(int32_t));
      slot.counts.reserve(static_cast<size_t>(std::max<int64_t>(count_count, 1)) * sizeof(int32_t));
    }
  }

  void reserve_workspace(size_t bytes) {
    if (bytes <= workspace_.bytes()) return;
    KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the old block may still be in use
    workspace_.reserve(bytes);
  }

  // ---- geometry of the current chunk ---------------------------------------------------------------
  static constexpr int kMetaInts = 5;  // seq_lens[1], q_indptr[2], page_indptr[2]
  int32_t* dev_seq_lens() const { return meta_.as<int32_t>(); }
  int32_t* dev_q_indptr() const { return meta_.as<int32_t>() + 1; }
  int32_t* dev_page_indptr() const { return meta_.as<int32_t>() + 3; }

  DecodeShape decode_shape() const {
    return DecodeShape{1, c_.hq, c_.hkv, c_.head_dim, DType::BF16, capacity_tokens()};
  }
  PrefillBatch prefill_batch() const { return PrefillBatch{1, host_meta_ + 1, host_meta_}; }

  PagedKV paged_kv(int layer) const {
    PagedKV kv;
    kv.k = layers_[static_cast<size_t>(layer)].k_pool.as<bf16>();
    kv.v = layers_[static_cast<size_t>(layer)].v_pool.as<bf16>();
    kv.dtype = DType::BF16;
    kv.batch = 1;
    kv.num_kv_heads = c_.hkv;
    kv.head_dim = c_.head_dim;
    kv.page_size = kPageSize;
    kv.set_packed_strides();
    kv.page_indptr = dev_page_indptr();
    kv.page_indices = page_table_.as<int32_t>();
    kv.seq_lens = dev_seq_lens();
    return kv;
  }

  // ---- the forward pass ----------------------------------------------------------------------------
  void gemm(const bf16* x, int rows, int in, const bf16* w, int out, float* y) {
    // Row-major y[rows][out] = x[rows][in] * w[out][in]^T, i.e. column-major y^T = w^T(op T) x^T.
    const float one = 1.f, zero = 0.f;
    KASCADE_CUBLAS_CHECK(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &one, w, CUDA_R_16BF, in, x,
                                      CUDA_R_16BF, in, &zero, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT));
  }

  void forward_chunk(const int32_t* tokens, int count, float* logits, bool all) {
    const int dim = c_.dim, qkv_width = (c_.hq + 2 * c_.hkv) * c_.head_dim, q_width = c_.hq * c_.head_dim;
    const int rows = logits ? (all ? count : 1) : 0;
    reserve_tokens(n_ + count);
    reserve_scratch(count, std::max(rows, 1));
    host_meta_[0] = n_ + count;  // seq_lens
    host_meta_[1] = 0;           // q_indptr
    host_meta_[2] = count;
    host_meta_[3] = 0;           // page_indptr
    host_meta_[4] = pages_;
    reserve_selections(count);
    KASCADE_CUDA_CHECK(cudaMemcpyAsync(meta_.as<int32_t>(), host_meta_, sizeof(host_meta_), cudaMemcpyHostToDevice, stream_));
    KASCADE_CUDA_CHECK(cudaMemcpyAsync(ids_.as<int32_t>(), tokens, sizeof(int32_t) * count, cudaMemcpyHostToDevice, stream_));
    // Pageable copies return once staged, but the host arrays must outlive them: wait here.
    KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream_));

    float* x = x_.as<float>();
    bf16* h = h_.as<bf16>();
    float* o = o_.as<float>();
    cuda::embed_rows(ids_.as<int32_t>(), count, token_embd_.as<bf16>(), dim, x, stream_);
    const float* pending = nullptr;  // the previous layer's FFN output, added by the next norm
    for (int l = 0; l < c_.layers; ++l) {
      DeviceLayer& w = layers_[static_cast<size_t>(l)];
      cuda::add_rms_norm(x, pending, w.attn_norm.as<float>(), count, dim, c_.rms_eps, h, stream_);
      gemm(h, count, dim, w.wqkv.as<bf16>(), qkv_width, qkv_.as<float>());
      cuda::QkvEpilogueParams e;
      e.qkv = qkv_.as<float>();
      e.bias = c_.qkv_bias ? w.bqkv.as<float>() : nullptr;
      e.q_norm = c_.qk_norm ? w.q_norm.as<float>() : nullptr;
      e.k_norm = c_.qk_norm ? w.k_norm.as<float>() : nullptr;
      e.inv_freq = inv_freq_.as<float>();
      e.position_scale = c_.rope_position_scale;
      e.pairs = c_.rope_style == RopeStyle::Adjacent ? cuda::RopePairs::Adjacent : cuda::RopePairs::Halves;
      e.eps = c_.rms_eps;
      e.tokens = count;
      e.hq = c_.hq;
      e.hkv = c_.hkv;
      e.head_dim = c_.head_dim;
      e.first_pos = n_;
      e.q_out = q_.as<bf16>();
      e.k_pool = w.k_pool.as<bf16>();
      e.v_pool = w.v_pool.as<bf16>();
      e.page_indices = page_table_.as<int32_t>();
      e.page_size = kPageSize;
      e.token_stride = static_cast<int64_t>(c_.hkv) * c_.head_dim;
      e.page_stride = e.token_stride * kPageSize;
      cuda::qkv_epilogue(e, stream_);
      if (qk_hook_) call_query_key_hook(l, count);
      attention(l, count);
      gemm(att_.as<bf16>(), count, q_width, w.wo.as<bf16>(), dim, o);
      if (hook_) call_hook(l, count);
      cuda::add_rms_norm(x, o, w.ffn_norm.as<float>(), count, dim, c_.rms_eps, h, stream_);
      gemm(h, count, dim, w.w_gate_up.as<bf16>(), 2 * c_.ffn, gate_up_.as<float>());
      cuda::swiglu(gate_up_.as<float>(), count, c_.ffn, act_.as<bf16>(), stream_);
      gemm(act_.as<bf16>(), count, c_.ffn, w.w_down.as<bf16>(), dim, o);
      pending = o;
    }
    n_ += count;
    if (rows > 0) {
      const size_t first = static_cast<size_t>(count - rows) * dim;
      cuda::add_rms_norm(x + first, pending + first, output_norm_.as<float>(), rows, dim, c_.rms_eps, h, stream_);
      gemm(h, rows, dim, output_matrix(), c_.vocab, logits_.as<float>());
      KASCADE_CUDA_CHECK(cudaMemcpyAsync(logits, logits_.as<float>(), sizeof(float) * rows * c_.vocab,
                                         cudaMemcpyDeviceToHost, stream_));
    }
    KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void call_hook(int layer, int count) {
    const size_t n = static_cast<size_t>(count) * c_.dim;
    hook_residual_.resize(n);
    hook_attn_.resize(n);
    KASCADE_CUDA_CHECK(cudaMemcpyAsync(hook_residual_.data(), x_.as<float>(), n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    KASCADE_CUDA_CHECK(cudaMemcpyAsync(hook_attn_.data(), o_.as<float>(), n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    hook_(layer, count, c_.dim, hook_residual_.data(), hook_attn_.data());
  }

  // The hook sees the bf16 q and k that attention reads, widened to fp32. The identity page table
  // makes the chunk's keys one contiguous run of the pool.
  void call_query_key_hook(int layer, int count) {
    const size_t q_elems = static_cast<size_t>(count) * c_.hq * c_.head_dim;
    const size_t k_elems = static_cast<size_t>(count) * c_.hkv * c_.head_dim;
    std::vector<uint16_t> q_raw(q_elems), k_raw(k_elems);
    const bf16* k_first = layers_[static_cast<size_t>(layer)].k_pool.as<bf16>() + static_cast<size_t>(n_) * c_.hkv * c_.head_dim;
    KASCADE_CUDA_CHECK(cudaMemcpyAsync(q_raw.data(), q_.as<bf16>(), q_elems * 2, cudaMemcpyDeviceToHost, stream_));
    KASCADE_CUDA_CHECK(cudaMemcpyAsync(k_raw.data(), k_first, k_elems * 2, cudaMemcpyDeviceToHost, stream_));
    KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    hook_q_.resize(q_elems);
    hook_k_.resize(k_elems);
    std::transform(q_raw.begin(), q_raw.end(), hook_q_.begin(), bf16_to_float);
    std::transform(k_raw.begin(), k_raw.end(), hook_k_.begin(), bf16_to_float);
    qk_hook_(layer, n_, count, hook_q_.data(), hook_k_.data());
  }

  // The override's attention on the host over the cache rows 0..n_+count-1 (contiguous: the
  // page table is the identity), counted as the CPU backend counts an override.
  void overridden_attention(int layer, int count) {
    const DeviceLayer& w = layers_[static_cast<size_t>(layer)];
    const cuda::AttentionShape shape{c_.hq, c_.hkv, c_.head_dim};
    stats_.keys_read += host_attention_.run(override_, layer, n_, count, shape, q_.as<bf16>(), w.k_pool.as<bf16>(),
                                            w.v_pool.as<bf16>(), att_.as<bf16>(), stream_);
    for (int64_t t = n_; t < n_ + count; ++t) stats_.keys_dense += static_cast<double>(t + 1) * c_.hq;
  }

  // Attention of layer `layer` for the chunk's `count` queries into att_, by the plan's role.
  void attention(int layer, int count) {
    if (override_) {
      overridden_attention(layer, count);
      return;
    }
    const Role role = plan_ ? plan_->role_of(layer) : Role::Dense;
    const bool planned = plan_ != nullptr;
    SelectionSlot* slot = planned ? &selections_[static_cast<size_t>(plan_->anchor_slot(layer))] : nullptr;
    const int32_t* head_map = role == Role::Reuse ? layers_[static_cast<size_t>(layer)].head_map.as<int32_t>() : nullptr;
    if (count == 1) {
      const DecodeShape shape = decode_shape();
      const DecodeTensors t{q_.as<bf16>(), att_.as<bf16>(), paged_kv(layer), c_.hq};
      const DecodeRole decode_role = !planned ? DecodeRole::Dense
                                     : role == Role::Dense ? DecodeRole::Layer0
                                     : role == Role::Anchor ? DecodeRole::Anchor
                                                            : DecodeRole::Reuse;
      reserve_workspace(decode_workspace_size(shape, decode_role, sparsity_));
      const Workspace ws{workspace_.as<void>(), workspace_.bytes()};
      DecodeSelection sel;
      if (planned) {
        sel = DecodeSelection{slot->indices.as<int32_t>(), slot->counts.as<int32_t>(),
                              decode_selection_sets(shape, sparsity_), decode_selection_kmax(shape, sparsity_)};
      }
      switch (decode_role) {
        case DecodeRole::Dense: decode_dense(t, shape, sparsity_, ws, stream_); break;
        case DecodeRole::Layer0: decode_layer0(t, shape, sparsity_, sel, ws, stream_); break;
        case DecodeRole::Anchor: decode_anchor(t, shape, sparsity_, sel, ws, stream_); break;
        case DecodeRole::Reuse: decode_reuse(t, shape, sparsity_, sel, head_map, ws, stream_); break;
      }
    } else {
      PrefillArgs a;
      a.q = q_.as<bf16>();
      a.q_indptr = dev_q_indptr();
      a.num_q_heads = c_.hq;
      a.kv = paged_kv(layer);
      a.out = att_.as<bf16>();
      a.host = prefill_batch();
      if (!planned) {
        prefill_dense(a, sparsity_, stream_);
      } else {
        const SelectionBuffer sel{slot->indices.as<int32_t>(), slot->counts.as<int32_t>(),
                                  prefill_selection_shape(a.host, c_.hkv, sparsity_)};
        if (role == Role::Reuse) {
          prefill_reuse(a, sparsity_, sel, head_map, stream_);
        } else {
          // Layer 0 is an anchor whose output is dense (SPEC 5.5); its workspace is an anchor's.
          reserve_workspace(prefill_workspace_size(a, sparsity_, Role::Anchor));
          prefill_anchor(a, sparsity_, role == Role::Dense, sel, workspace_.as<void>(), workspace_.bytes(), stream_);
        }
      }
    }
    count_keys(role, count);
  }

  // Keys read, counted as the CPU backend counts them (backend.h AttentionStats), from the same
  // budget arithmetic the kernels use (budget.h).
  void count_keys(Role role, int count) {
    const int64_t p0 = n_, p1 = n_ + count;
    double dense = 0;
    for (int64_t t = p0; t < p1; ++t) dense += static_cast<double>(t + 1) * c_.hq;
    stats_.keys_dense += dense;
    if (role != Role::Reuse) {
      stats_.keys_read += dense;
      return;
    }
    const SparsityParams& sp = sparsity_;
    if (count == 1) {
      stats_.keys_read += static_cast<double>(c_.hq) * budget_k(p1, sp.rho, sp.k_min, sp.k_multiple);
      return;
    }
    const int64_t tiles = num_tiles(p0, p1, sp.tile);
    for (int64_t tau = 0; tau < tiles; ++tau) {
      const int64_t b = tile_begin(p0, tau, sp.tile), e = tile_end(p0, p1, tau, sp.tile);
      const int64_t k = tile_budget(sp.rolling(), b, p1, sp.rho, sp.k_min, sp.k_multiple);
      for (int64_t t = b; t < e; ++t) stats_.keys_read += static_cast<double>(c_.hq) * (k + (t - b + 1));
    }
  }

  const Model& m_;
  const ModelConfig& c_;
  const Plan* plan_;
  BackendOptions options_;
  SparsityParams sparsity_;
  int chunk_ = 512;
  int n_ = 0;
  int pages_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  std::vector<DeviceLayer> layers_;
  DeviceBuffer token_embd_, output_, output_norm_, inv_freq_;
  DeviceBuffer page_table_, meta_;
  int32_t host_meta_[kMetaInts] = {};
  std::vector<SelectionSlot> selections_;  // per anchor slot
  DeviceBuffer workspace_;
  DeviceBuffer ids_, x_, h_, qkv_, q_, att_, o_, gate_up_, act_, logits_;
  AttentionStats stats_;
  AttentionHook hook_;
  std::vector<float> hook_residual_, hook_attn_;
  QueryKeyHook qk_hook_;
  std::vector<float> hook_q_, hook_k_;
  AttentionOverride override_;
  cuda::HostAttention host_attention_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const Model& model, const Plan* plan, const BackendOptions& options) {
  return std::make_unique<CudaBackend>(model, plan, options);
}

}  // namespace kascade::engine
