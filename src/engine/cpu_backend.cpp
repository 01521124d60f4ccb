// The CPU backend: fp32 Llama-family forward pass over one sequence with a growing KV cache.
// Dense attention (no plan) is computed here directly; with a plan every layer's attention is
// one call of the CPU oracle (kascade::ref::attend) in the layer's role, the anchors' selections
// kept for their reuse layers.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

#include "cpu_kernels.h"
#include "kascade/budget.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/model.h"
#include "kascade/error.h"
#include "kascade/plan.h"
#include "kascade/reference.h"

namespace kascade::engine {

namespace {

using cpu::ThreadPool;

int resolve_threads(int requested) {
  if (requested > 0) return requested;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(const Model& model, const Plan* plan, const BackendOptions& options)
      : m_(model), c_(model.config), plan_(plan), options_(options), pool_(resolve_threads(options.threads)) {
    KASCADE_CHECK(options.prefill_chunk >= 1, "prefill chunk must be at least 1 token, got " << options.prefill_chunk);
    chunk_ = options.prefill_chunk;
    if (plan_) {
      check_plan_matches(*plan_, c_.layers, c_.hq, c_.hkv, c_.head_dim);
      // Prefill tiles are aligned at each chunk's first position: whole tiles per chunk keep
      // the tiling of a long prompt the same as in one call.
      chunk_ = (chunk_ + plan_->tile - 1) / plan_->tile * plan_->tile;
      selections_.resize(plan_->anchors.size());
    }
    k_cache_.resize(static_cast<size_t>(c_.layers));
    v_cache_.resize(static_cast<size_t>(c_.layers));
  }

  const char* name() const override { return "cpu"; }

  void reset() override {
    n_ = 0;
    stats_ = AttentionStats{};
    for (ref::Selection& s : selections_) s = ref::Selection{};
  }

  int position() const override { return n_; }
  AttentionStats stats() const override { return stats_; }
  void set_attention_hook(AttentionHook hook) override { hook_ = std::move(hook); }
  void set_query_key_hook(QueryKeyHook hook) override { qk_hook_ = std::move(hook); }

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
    return logits;
  }

 private:
  // Runs `count` tokens at positions n_.. and writes logits of every token (all) or of the last
  // one (when `logits` is non-null).
  void forward_chunk(const int32_t* tokens, int count, float* logits, bool all) {
    const int dim = c_.dim, d = c_.head_dim, qd = c_.hq * d, kvd = c_.hkv * d;
    ensure_capacity(n_ + count);
    const size_t T = static_cast<size_t>(count);
    x_.resize(T * dim);
    h_.resize(T * dim);
    q_.resize(T * qd);
    k_.resize(T * kvd);
    v_.resize(T * kvd);
    att_.resize(T * qd);
    o_.resize(T * dim);
    gate_.resize(T * c_.ffn);
    up_.resize(T * c_.ffn);
    for (int t = 0; t < count; ++t) {
      std::memcpy(&x_[static_cast<size_t>(t) * dim], &m_.token_embd[static_cast<size_t>(tokens[t]) * dim],
                  sizeof(float) * dim);
    }
    for (int l = 0; l < c_.layers; ++l) {
      const LayerWeights& w = m_.layers[static_cast<size_t>(l)];
      cpu::rms_norm(x_.data(), w.attn_norm.data(), count, dim, c_.rms_eps, h_.data());
      cpu::matmul(pool_, h_.data(), count, dim, w.wq.data(), qd, q_.data(), c_.qkv_bias ? w.bq.data() : nullptr);
      cpu::matmul(pool_, h_.data(), count, dim, w.wk.data(), kvd, k_.data(), c_.qkv_bias ? w.bk.data() : nullptr);
      cpu::matmul(pool_, h_.data(), count, dim, w.wv.data(), kvd, v_.data(), c_.qkv_bias ? w.bv.data() : nullptr);
      if (c_.qk_norm) {
        cpu::rms_norm(q_.data(), w.q_norm.data(), count * c_.hq, d, c_.rms_eps, q_.data());
        cpu::rms_norm(k_.data(), w.k_norm.data(), count * c_.hkv, d, c_.rms_eps, k_.data());
      }
      cpu::apply_rope(c_, q_.data(), count, c_.hq, n_);
      cpu::apply_rope(c_, k_.data(), count, c_.hkv, n_);
      if (qk_hook_) qk_hook_(l, n_, count, q_.data(), k_.data());
      append_kv(l, count);
      if (plan_) {
        planned_attention(l, count);
      } else {
        dense_attention(l, count);
      }
      cpu::matmul(pool_, att_.data(), count, qd, w.wo.data(), dim, o_.data());
      if (hook_) hook_(l, count, dim, x_.data(), o_.data());
      for (size_t i = 0; i < T * dim; ++i) x_[i] += o_[i];

      cpu::rms_norm(x_.data(), w.ffn_norm.data(), count, dim, c_.rms_eps, h_.data());
      cpu::matmul(pool_, h_.data(), count, dim, w.w_gate.data(), c_.ffn, gate_.data());
      cpu::matmul(pool_, h_.data(), count, dim, w.w_up.data(), c_.ffn, up_.data());
      cpu::swiglu(gate_.data(), up_.data(), static_cast<int64_t>(T) * c_.ffn, gate_.data());
      cpu::matmul(pool_, gate_.data(), count, c_.ffn, w.w_down.data(), dim, o_.data());
      for (size_t i = 0; i < T * dim; ++i) x_[i] += o_[i];
    }
    n_ += count;
    if (!logits) return;
    const int rows = all ? count : 1;
    const float* last = x_.data() + static_cast<size_t>(count - rows) * dim;
    cpu::rms_norm(last, m_.output_norm.data(), rows, dim, c_.rms_eps, h_.data());
    cpu::matmul(pool_, h_.data(), rows, dim, m_.output_matrix(), c_.vocab, logits);
    // A non-finite logit means the weights or the arithmetic went wrong: say so, never pass it on.
    for (size_t i = 0; i < static_cast<size_t>(rows) * c_.vocab; ++i) {
      KASCADE_CHECK(std::isfinite(logits[i]), "forward: logit " << i % c_.vocab << " of position "
                                                   << n_ - rows + static_cast<int>(i / c_.vocab) << " is not finite");
    }
  }

  // ---- KV cache: per layer [hkv][capacity][head_dim] -------------------------------------------
  void ensure_capacity(int needed) {
    if (needed <= capacity_) return;
    constexpr int kInitialCapacity = 64;
    int cap = std::max(kInitialCapacity, capacity_);
    while (cap < needed) cap *= 2;
    const size_t d = static_cast<size_t>(c_.head_dim);
    for (int l = 0; l < c_.layers; ++l) {
      for (auto* cache : {&k_cache_[static_cast<size_t>(l)], &v_cache_[static_cast<size_t>(l)]}) {
        std::vector<float> grown(static_cast<size_t>(c_.hkv) * cap * d);
        for (int g = 0; g < c_.hkv && n_ > 0; ++g) {
          std::memcpy(&grown[static_cast<size_t>(g) * cap * d], &(*cache)[static_cast<size_t>(g) * capacity_ * d],
                      sizeof(float) * static_cast<size_t>(n_) * d);
        }
        cache->swap(grown);
      }
    }
    capacity_ = cap;
  }

  float* cache_row(std::vector<float>& cache, int g, int pos) {
    return &cache[(static_cast<size_t>(g) * capacity_ + pos) * c_.head_dim];
  }

  void append_kv(int layer, int count) {
    const int d = c_.head_dim;
    for (int t = 0; t < count; ++t) {
      for (int g = 0; g < c_.hkv; ++g) {
        const size_t src = (static_cast<size_t>(t) * c_.hkv + g) * d;
        std::memcpy(cache_row(k_cache_[static_cast<size_t>(layer)], g, n_ + t), &k_[src], sizeof(float) * d);
        std::memcpy(cache_row(v_cache_[static_cast<size_t>(layer)], g, n_ + t), &v_[src], sizeof(float) * d);
      }
    }
  }

  // ---- dense causal attention -------------------------------------------------------------------
  void dense_attention(int layer, int count) {
    const int d = c_.head_dim, group = c_.hq / c_.hkv;
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    constexpr int kQueriesPerTask = 16;
    const int query_blocks = (count + kQueriesPerTask - 1) / kQueriesPerTask;
    const float* kc = k_cache_[static_cast<size_t>(layer)].data();
    const float* vc = v_cache_[static_cast<size_t>(layer)].data();
    pool_.parallel_for(c_.hq * query_blocks, [&](int task) {
      const int h = task / query_blocks, g = h / group;
      const int t0 = (task % query_blocks) * kQueriesPerTask, t1 = std::min(count, t0 + kQueriesPerTask);
      std::vector<float> scores(static_cast<size_t>(n_ + count));
      const float* kg = kc + static_cast<size_t>(g) * capacity_ * d;
      const float* vg = vc + static_cast<size_t>(g) * capacity_ * d;
      for (int t = t0; t < t1; ++t) {
        // Causal: the query at position n_ + t sees keys 0..n_ + t.
        cpu::attend_one_query(&q_[(static_cast<size_t>(t) * c_.hq + h) * d], kg, vg, n_ + t + 1, d, scale,
                              scores.data(), &att_[(static_cast<size_t>(t) * c_.hq + h) * d]);
      }
    });
    for (int t = 0; t < count; ++t) {
      const double keys = static_cast<double>(n_ + t + 1) * c_.hq;
      stats_.keys_read += keys;
      stats_.keys_dense += keys;
    }
  }

  // ---- attention through the plan (the CPU oracle) ----------------------------------------------
  void planned_attention(int layer, int count) {
    const int d = c_.head_dim, n = n_ + count, group = c_.hq / c_.hkv;
    ref::Call call;
    call.phase = count == 1 ? Phase::Decode : Phase::Prefill;
    call.role = plan_->role_of(layer);
    call.params = plan_->params();
    call.p0 = call.phase == Phase::Prefill ? n_ : 0;
    if (call.role == Role::Reuse) call.head_map = plan_->head_map[static_cast<size_t>(layer)];
    // The oracle takes q [Hq, nq, D] and k, v [Hkv, n, D].
    qh_.resize(static_cast<size_t>(c_.hq) * count * d);
    for (int t = 0; t < count; ++t) {
      for (int h = 0; h < c_.hq; ++h) {
        std::memcpy(&qh_[(static_cast<size_t>(h) * count + t) * d], &q_[(static_cast<size_t>(t) * c_.hq + h) * d],
                    sizeof(float) * d);
      }
    }
    kh_.resize(static_cast<size_t>(c_.hkv) * n * d);
    vh_.resize(kh_.size());
    for (int g = 0; g < c_.hkv; ++g) {
      std::memcpy(&kh_[static_cast<size_t>(g) * n * d], cache_row(k_cache_[static_cast<size_t>(layer)], g, 0),
                  sizeof(float) * static_cast<size_t>(n) * d);
      std::memcpy(&vh_[static_cast<size_t>(g) * n * d], cache_row(v_cache_[static_cast<size_t>(layer)], g, 0),
                  sizeof(float) * static_cast<size_t>(n) * d);
    }
    const size_t slot = static_cast<size_t>(plan_->anchor_slot(layer));
    const ref::Selection* reuse = call.role == Role::Reuse ? &selections_[slot] : nullptr;
    ref::Result r = ref::attend(call, qh_.data(), kh_.data(), vh_.data(), c_.hq, c_.hkv, count, n, d, reuse);
    for (int t = 0; t < count; ++t) {
      for (int h = 0; h < c_.hq; ++h) {
        std::memcpy(&att_[(static_cast<size_t>(t) * c_.hq + h) * d], &r.out[(static_cast<size_t>(h) * count + t) * d],
                    sizeof(float) * d);
      }
    }
    double dense = 0;
    for (int t = 0; t < count; ++t) dense += static_cast<double>(n_ + t + 1) * c_.hq;
    stats_.keys_dense += dense;
    if (call.role != Role::Reuse) {
      stats_.keys_read += dense;
      selections_[slot] = std::move(r.selection);
      return;
    }
    // A reuse head reads its selection, plus in prefill the diagonal keys b..t of its tile.
    const ref::Selection& sel = *reuse;
    for (int g = 0; g < c_.hkv; ++g) {
      const int set = sel.num_sets == 1 ? 0 : call.head_map.empty() ? g : call.head_map[static_cast<size_t>(g)];
      if (call.phase == Phase::Decode) {
        stats_.keys_read += static_cast<double>(group) * sel.row_count(set, 0);
        continue;
      }
      for (int tau = 0; tau < sel.num_tiles; ++tau) {
        const int64_t b = tile_begin(n_, tau, plan_->tile);
        const int64_t e = tile_end(n_, n, tau, plan_->tile);
        for (int64_t t = b; t < e; ++t) {
          stats_.keys_read += static_cast<double>(group) * (sel.row_count(set, tau) + (t - b + 1));
        }
      }
    }
  }

  const Model& m_;
  const ModelConfig& c_;
  const Plan* plan_;
  BackendOptions options_;
  ThreadPool pool_;
  int chunk_ = 512;
  int n_ = 0;
  int capacity_ = 0;
  std::vector<std::vector<float>> k_cache_, v_cache_;
  std::vector<ref::Selection> selections_;  // per anchor slot: its latest selection
  AttentionStats stats_;
  AttentionHook hook_;
  QueryKeyHook qk_hook_;
  // Scratch buffers, reused across calls.
  std::vector<float> x_, h_, q_, k_, v_, att_, o_, gate_, up_, qh_, kh_, vh_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const Model& model, const Plan* plan, const BackendOptions& options) {
  return std::make_unique<CpuBackend>(model, plan, options);
}

}  // namespace kascade::engine
