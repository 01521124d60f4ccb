// The CPU backend: fp32 Llama-family forward pass over one sequence with a growing KV cache,
// stored as f16 (the default), fp32 or FP8 e4m3 with per (layer, kv head) scales
// (BackendOptions::cpu_kv_cache). Attention reads the cache
// in place through cpu::attend (cpu/attention.h, fp32 accumulation) in the layer's role (dense
// without a plan), the anchors' selections kept for their reuse layers; a model's sliding window
// is applied by the dense path here.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <thread>

#include "backend_front.h"
#include "cpu/f16_rows.h"
#include "cpu/quantized.h"
#include "cpu_kernels.h"
#include "kascade/budget.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/cpu_attention.h"
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

// One sequence's state: its KV cache, the anchors' latest selections and its statistics.
struct Sequence {
  int n = 0;          // tokens in the cache
  int capacity = 0;   // positions allocated per kv head
  // Per layer [hkv][capacity][head_dim]: the pair of the core's cache type, the other empty.
  std::vector<std::vector<float>> k_f32, v_f32;
  std::vector<std::vector<uint16_t>> k_f16, v_f16;  // IEEE half bit patterns
  std::vector<std::vector<uint8_t>> k_f8, v_f8;      // e4m3 codes
  // e4m3 cache: per layer [hkv] scales, set by the sequence's first step (kFp8Headroom), grown
  // when a later step would saturate.
  std::vector<std::vector<float>> k_scale, v_scale;
  std::vector<ref::Selection> selections;           // per anchor slot
  AttentionStats stats;
};

// `scale`: the rows' kv head's scale, used by the e4m3 cache only.
// fp32 rows into the cache: copied, rounded to f16, or divided by the scale and rounded to e4m3.
void store_rows(const float* src, int64_t n, float* dst, float) { std::memcpy(dst, src, sizeof(float) * n); }
void store_rows(const float* src, int64_t n, uint16_t* dst, float) { cpu::narrow_f16(src, n, dst); }
void store_rows(const float* src, int64_t n, uint8_t* dst, float scale) { cpu::narrow_e4m3(src, n, scale, dst); }
// Cache rows as fp32: copied, or widened from f16 / e4m3.
void load_rows(const float* src, int64_t n, float* dst, float) { std::memcpy(dst, src, sizeof(float) * n); }
void load_rows(const uint16_t* src, int64_t n, float* dst, float) { cpu::widen_f16(src, n, dst); }
void load_rows(const uint8_t* src, int64_t n, float* dst, float scale) { cpu::widen_e4m3(src, n, scale, dst); }
// Cache rows as fp32 to read: fp32 rows in place, others widened into `buffer`.
const float* rows_as_f32(const float* src, int64_t /*n*/, std::vector<float>& /*buffer*/, float) { return src; }
template <typename T>
const float* rows_as_f32(const T* src, int64_t n, std::vector<float>& buffer, float scale) {
  buffer.resize(static_cast<size_t>(n));
  load_rows(src, n, buffer.data(), scale);
  return buffer.data();
}

// The e4m3 cache's scales: a sequence's first step (its first prefill chunk, or its first token)
// sets, per (layer, kv head), scale = kFp8Headroom * max |x| / 448 for K and for V. A later step
// whose maximum would saturate (beyond 448 * scale) grows that head's scale the same way from
// its own maximum and re-rounds the head's cached codes to it (each code once more to nearest,
// O(n) per growth). So values never saturate, and a short first step (a one-token prompt, a
// chunk of 8) costs precision only until the values it did not see arrive. Measured on
// SmolLM2-135M over three 4096-token windows of the natural-eval corpus, the maxima of a whole
// window exceed those of its first 512 tokens by up to 1.32x (K) and 2.65x (V, layer 28)
// (docs/engine.md): with 8 no growth happens there after a first chunk of 512. e4m3 is a
// floating format, so headroom costs precision only for values below max * headroom / 28672
// (its subnormals: below max / 3584 here), negligible in q.k and p.v.
constexpr float kFp8Headroom = 8.0f;
float fp8_scale(float abs_max) { return abs_max > 0.0f ? abs_max * kFp8Headroom / kE4M3Max : 1.0f; }

// The largest magnitude that f16 rounds to a finite value (65504 and what rounds to it).
constexpr float kF16RoundsToFinite = 65520.0f;

// The tokens of one sequence in one step: rows [row, row + count) of the step's activations.
struct Segment {
  Sequence* seq;
  const int32_t* tokens;
  int count;
  int row;
  float* logits;  // [count or 1][vocab], or null
  bool all_logits;
};

// The forward pass over any number of sequences at once: the matmuls, norms and the MLP run over
// the rows of all of them together (the weights are read once per step); RoPE, the KV cache and
// attention are per sequence.
class CpuCore {
 public:
  using Sequence = ::kascade::engine::Sequence;
  using Segment = ::kascade::engine::Segment;
  static Segment segment(Sequence* seq, const int32_t* tokens, int count, float* logits, bool all_logits) {
    return Segment{seq, tokens, count, 0, logits, all_logits};
  }

  CpuCore(const Model& model, const Plan* plan, const BackendOptions& options)
      : m_(model), c_(model.config), plan_(plan), options_(options), pool_(resolve_threads(options.threads)) {
    KASCADE_CHECK(options.prefill_chunk >= 1, "prefill chunk must be at least 1 token, got " << options.prefill_chunk);
    KASCADE_CHECK(options.cpu_kv_cache == DType::F16 || options.cpu_kv_cache == DType::F32 ||
                      options.cpu_kv_cache == DType::F8E4M3,
                  "cpu backend: KV cache type " << dtype_name(options.cpu_kv_cache)
                                                << " is not supported (f16, f32 or f8e4m3)");
    chunk_ = options.prefill_chunk;
    if (plan_) {
      check_plan_matches(*plan_, c_.layers, c_.hq, c_.hkv, c_.head_dim);
      // Prefill tiles are aligned at each chunk's first position: whole tiles per chunk keep
      // the tiling of a long prompt the same as in one call.
      chunk_ = (chunk_ + plan_->sparsity.tile - 1) / plan_->sparsity.tile * plan_->sparsity.tile;
    }
  }

  int vocab() const { return c_.vocab; }
  int chunk() const { return chunk_; }
  const BackendOptions& options() const { return options_; }
  void set_attention_hook(AttentionHook hook) { hook_ = std::move(hook); }
  void set_query_key_hook(QueryKeyHook hook) { qk_hook_ = std::move(hook); }
  void set_attention_override(AttentionOverride attention) { override_ = std::move(attention); }

  void reset(Sequence& s) const {
    s.n = 0;
    s.stats = AttentionStats{};
    with_cache(s, [&](auto& k_layers, auto& v_layers) {
      k_layers.resize(static_cast<size_t>(c_.layers));
      v_layers.resize(static_cast<size_t>(c_.layers));
    });
    s.k_scale.assign(static_cast<size_t>(c_.layers), std::vector<float>(static_cast<size_t>(c_.hkv), 1.0f));
    s.v_scale = s.k_scale;
    s.selections.assign(plan_ ? plan_->anchors.size() : 0, ref::Selection{});
  }

  // Room for `positions` tokens before a forward() of that many: one allocation, where growing
  // chunk by chunk would copy the cache at each step and leave the freed copies to the allocator.
  void reserve(Sequence& s, int positions) const { ensure_capacity(s, positions); }

  void truncate(Sequence& s, int position) const {
    KASCADE_CHECK(position >= 0 && position <= s.n,
                  "truncate: position " << position << " is outside the cached 0.." << s.n << " tokens");
    // Cache rows past `position` are overwritten by the next forward(); anchors select afresh.
    s.n = position;
  }

  void check_tokens(const std::vector<int32_t>& tokens) const {
    for (int32_t t : tokens) {
      KASCADE_CHECK(t >= 0 && t < c_.vocab, "forward: token id " << t << " is outside the vocabulary [0, " << c_.vocab << ")");
    }
  }

  // Runs every segment's tokens at its sequence's next positions; writes the requested logits.
  void step(std::vector<Segment>& segments) {
    const int dim = c_.dim, d = c_.head_dim, qd = c_.hq * d, kvd = c_.hkv * d;
    // Before anything changes, so that a refused step leaves every sequence as it was.
    for (const Segment& sg : segments) {
      if (override_) check_window_allows_full_attention(*sg.seq, sg.count, "attention override");
      else if (plan_) check_window_allows_full_attention(*sg.seq, sg.count, "Kascade plan");
      // Calibration scores every causal key from the hook's q and k (SPEC 6).
      if (qk_hook_) check_window_allows_full_attention(*sg.seq, sg.count, "query/key hook (calibration)");
    }
    int total = 0;
    for (Segment& sg : segments) {
      sg.row = total;
      total += sg.count;
      ensure_capacity(*sg.seq, sg.seq->n + sg.count);
    }
    const size_t T = static_cast<size_t>(total);
    x_.resize(T * dim);
    h_.resize(T * dim);
    q_.resize(T * qd);
    k_.resize(T * kvd);
    v_.resize(T * kvd);
    att_.resize(T * qd);
    o_.resize(T * dim);
    gate_.resize(T * c_.ffn);
    up_.resize(T * c_.ffn);
    for (const Segment& sg : segments) {
      for (int t = 0; t < sg.count; ++t) {
        cpu::weight_row(cpu::weight_ref(m_.token_embd, m_.token_embd_quantized), dim, sg.tokens[t],
                        &x_[static_cast<size_t>(sg.row + t) * dim]);
      }
    }
    for (int l = 0; l < c_.layers; ++l) {
      const LayerWeights& w = m_.layers[static_cast<size_t>(l)];
      cpu::rms_norm(x_.data(), w.attn_norm.data(), total, dim, c_.rms_eps, h_.data());
      cpu::matmul(pool_, h_.data(), total, dim, cpu::weight_ref(w.wq, w.quantized.wq), qd, q_.data(), c_.qkv_bias ? w.bq.data() : nullptr);
      cpu::matmul(pool_, h_.data(), total, dim, cpu::weight_ref(w.wk, w.quantized.wk), kvd, k_.data(), c_.qkv_bias ? w.bk.data() : nullptr);
      cpu::matmul(pool_, h_.data(), total, dim, cpu::weight_ref(w.wv, w.quantized.wv), kvd, v_.data(), c_.qkv_bias ? w.bv.data() : nullptr);
      if (c_.qk_norm) {
        cpu::rms_norm(q_.data(), w.q_norm.data(), total * c_.hq, d, c_.rms_eps, q_.data());
        cpu::rms_norm(k_.data(), w.k_norm.data(), total * c_.hkv, d, c_.rms_eps, k_.data());
      }
      for (const Segment& sg : segments) {
        float* q = q_.data() + static_cast<size_t>(sg.row) * qd;
        float* k = k_.data() + static_cast<size_t>(sg.row) * kvd;
        cpu::apply_rope(c_, q, sg.count, c_.hq, sg.seq->n);
        cpu::apply_rope(c_, k, sg.count, c_.hkv, sg.seq->n);
        if (qk_hook_) qk_hook_(l, sg.seq->n, sg.count, q, k);
        append_kv(sg, l);
        if (override_) {
          overridden_attention(sg, l);
        } else if (plan_) {
          planned_attention(sg, l);
        } else {
          dense_attention(sg, l);
        }
      }
      cpu::matmul(pool_, att_.data(), total, qd, cpu::weight_ref(w.wo, w.quantized.wo), dim, o_.data());
      if (hook_) {
        for (const Segment& sg : segments) {
          const size_t off = static_cast<size_t>(sg.row) * dim;
          hook_(l, sg.count, dim, x_.data() + off, o_.data() + off);
        }
      }
      for (size_t i = 0; i < T * dim; ++i) x_[i] += o_[i];

      cpu::rms_norm(x_.data(), w.ffn_norm.data(), total, dim, c_.rms_eps, h_.data());
      cpu::matmul(pool_, h_.data(), total, dim, cpu::weight_ref(w.w_gate, w.quantized.w_gate), c_.ffn, gate_.data());
      cpu::matmul(pool_, h_.data(), total, dim, cpu::weight_ref(w.w_up, w.quantized.w_up), c_.ffn, up_.data());
      cpu::swiglu(gate_.data(), up_.data(), static_cast<int64_t>(T) * c_.ffn, gate_.data());
      cpu::matmul(pool_, gate_.data(), total, c_.ffn, cpu::weight_ref(w.w_down, w.quantized.w_down), dim, o_.data());
      for (size_t i = 0; i < T * dim; ++i) x_[i] += o_[i];
    }
    for (const Segment& sg : segments) sg.seq->n += sg.count;
    for (const Segment& sg : segments) {
      if (sg.logits) write_logits(sg);
    }
  }

 private:
  void write_logits(const Segment& sg) {
    const int dim = c_.dim;
    const int rows = sg.all_logits ? sg.count : 1;
    const float* last = x_.data() + static_cast<size_t>(sg.row + sg.count - rows) * dim;
    h_.resize(static_cast<size_t>(rows) * dim);
    cpu::rms_norm(last, m_.output_norm.data(), rows, dim, c_.rms_eps, h_.data());
    cpu::matmul(pool_, h_.data(), rows, dim, output_weights(), c_.vocab, sg.logits);
    // A non-finite logit means the weights or the arithmetic went wrong: say so, never pass it on.
    for (size_t i = 0; i < static_cast<size_t>(rows) * c_.vocab; ++i) {
      KASCADE_CHECK(std::isfinite(sg.logits[i]), "forward: logit " << i % c_.vocab << " of position "
                                                      << sg.seq->n - rows + static_cast<int>(i / c_.vocab)
                                                      << " is not finite");
    }
  }

  // The logits' matrix: output, or token_embd when the model ties them.
  cpu::WeightRef output_weights() const {
    const bool own = !m_.output.empty() || !m_.output_quantized.empty();
    return own ? cpu::weight_ref(m_.output, m_.output_quantized)
               : cpu::weight_ref(m_.token_embd, m_.token_embd_quantized);
  }

  // ---- KV cache: per layer [hkv][capacity][head_dim] of the cache type --------------------------
  // Calls fn(k_layers, v_layers) with the sequence's per-layer caches of the core's type.
  template <typename Fn>
  void with_cache(Sequence& s, Fn&& fn) const {
    if (options_.cpu_kv_cache == DType::F32) {
      fn(s.k_f32, s.v_f32);
    } else if (options_.cpu_kv_cache == DType::F8E4M3) {
      fn(s.k_f8, s.v_f8);
    } else {
      fn(s.k_f16, s.v_f16);
    }
  }
  template <typename Fn>
  void with_cache(const Sequence& s, Fn&& fn) const {
    if (options_.cpu_kv_cache == DType::F32) {
      fn(s.k_f32, s.v_f32);
    } else if (options_.cpu_kv_cache == DType::F8E4M3) {
      fn(s.k_f8, s.v_f8);
    } else {
      fn(s.k_f16, s.v_f16);
    }
  }

  void ensure_capacity(Sequence& s, int needed) const {
    if (needed <= s.capacity) return;
    // Growth by an eighth (at least to `needed`), in whole steps of 256 positions, and not past
    // the model's context unless asked: a prompt of 2048 tokens plus decode holds 2304
    // positions, not the 4096 of doubling, and a cache of 8192 positions on an 8192-token model
    // stays at 8192 (the cache is most of the resident memory at long context); the copies this
    // costs are O(n) per growth, small next to the attention work between growths.
    constexpr int kCapacityStep = 256;
    const int grown_capacity = std::max(needed, s.capacity + s.capacity / 8);
    const int stepped = (grown_capacity + kCapacityStep - 1) / kCapacityStep * kCapacityStep;
    const int cap = std::min(stepped, c_.context > 0 ? std::max(needed, c_.context) : INT_MAX);
    const size_t d = static_cast<size_t>(c_.head_dim);
    with_cache(s, [&](auto& k_layers, auto& v_layers) {
      for (int l = 0; l < c_.layers; ++l) {
        for (auto* cache : {&k_layers[static_cast<size_t>(l)], &v_layers[static_cast<size_t>(l)]}) {
          std::remove_reference_t<decltype(*cache)> grown(static_cast<size_t>(c_.hkv) * cap * d);
          for (int g = 0; g < c_.hkv && s.n > 0; ++g) {
            std::copy_n(cache->data() + static_cast<size_t>(g) * s.capacity * d, static_cast<size_t>(s.n) * d,
                        grown.data() + static_cast<size_t>(g) * cap * d);
          }
          cache->swap(grown);
        }
      }
    });
    s.capacity = cap;
  }

  void append_kv(const Segment& sg, int layer) {
    const int d = c_.head_dim;
    Sequence& s = *sg.seq;
    if (options_.cpu_kv_cache == DType::F16) check_f16_range(sg, layer);
    if (options_.cpu_kv_cache == DType::F8E4M3) update_fp8_scales(sg, layer);
    const std::vector<float>& k_scale = s.k_scale[static_cast<size_t>(layer)];
    const std::vector<float>& v_scale = s.v_scale[static_cast<size_t>(layer)];
    with_cache(s, [&](auto& k_layers, auto& v_layers) {
      auto* k_cache = k_layers[static_cast<size_t>(layer)].data();
      auto* v_cache = v_layers[static_cast<size_t>(layer)].data();
      for (int t = 0; t < sg.count; ++t) {
        for (int g = 0; g < c_.hkv; ++g) {
          const size_t src = (static_cast<size_t>(sg.row + t) * c_.hkv + g) * d;
          const size_t dst = (static_cast<size_t>(g) * s.capacity + s.n + t) * d;
          store_rows(&k_[src], d, k_cache + dst, k_scale[static_cast<size_t>(g)]);
          store_rows(&v_[src], d, v_cache + dst, v_scale[static_cast<size_t>(g)]);
        }
      }
    });
  }

  // The e4m3 scales of `layer` before the segment's rows are stored (kFp8Headroom): set from the
  // rows' absolute maxima on the sequence's first step, grown (with the head's codes re-rounded)
  // where the rows would saturate later.
  void update_fp8_scales(const Segment& sg, int layer) {
    Sequence& s = *sg.seq;
    const int d = c_.head_dim;
    for (const std::vector<float>* rows : {&k_, &v_}) {
      const bool keys = rows == &k_;
      std::vector<float>& scales = (keys ? s.k_scale : s.v_scale)[static_cast<size_t>(layer)];
      uint8_t* codes = (keys ? s.k_f8 : s.v_f8)[static_cast<size_t>(layer)].data();
      for (int g = 0; g < c_.hkv; ++g) {
        float abs_max = 0.0f;
        for (int t = 0; t < sg.count; ++t) {
          const float* x = rows->data() + (static_cast<size_t>(sg.row + t) * c_.hkv + g) * d;
          for (int i = 0; i < d; ++i) abs_max = std::max(abs_max, std::fabs(x[i]));
        }
        // A non-finite value makes a non-finite logit, which the logits check names.
        if (!std::isfinite(abs_max)) continue;
        float& scale = scales[static_cast<size_t>(g)];
        if (s.n == 0) {
          scale = fp8_scale(abs_max);
          continue;
        }
        if (abs_max <= kE4M3Max * scale) continue;
        const float grown = fp8_scale(abs_max);
        uint8_t* head = codes + static_cast<size_t>(g) * s.capacity * d;
        for (int64_t i = 0; i < static_cast<int64_t>(s.n) * d; ++i) {
          head[i] = float_to_e4m3(dequantize_e4m3(head[i], scale) / grown);
        }
        scale = grown;
      }
    }
  }

  // A key or value beyond f16's range would be cached as infinity and surface later as a
  // non-finite logit: refuse it here, where the cause can be named.
  void check_f16_range(const Segment& sg, int layer) const {
    const size_t kvd = static_cast<size_t>(c_.hkv) * c_.head_dim;
    for (const std::vector<float>* rows : {&k_, &v_}) {
      const float* x = rows->data() + static_cast<size_t>(sg.row) * kvd;
      for (size_t i = 0; i < static_cast<size_t>(sg.count) * kvd; ++i) {
        KASCADE_CHECK(std::fabs(x[i]) < kF16RoundsToFinite || !std::isfinite(x[i]),
                      "cpu backend: layer " << layer << " " << (rows == &k_ ? "key" : "value") << " element "
                                            << i % kvd << " at position " << sg.seq->n + static_cast<int>(i / kvd)
                                            << " is " << x[i] << ", beyond the f16 KV cache's range (65504); "
                                            << "use an f32 cache (--kv-cache f32)");
      }
    }
  }

  // ---- dense causal attention -------------------------------------------------------------------
  void dense_attention(const Segment& sg, int layer) {
    const int d = c_.head_dim, group = c_.hq / c_.hkv, count = sg.count;
    Sequence& s = *sg.seq;
    const int n0 = s.n;
    if (first_visible_key(n0 + count - 1) == 0) {
      // Every query sees every causal key: the shared attention (no window to apply).
      ref::Call call;
      call.phase = count == 1 ? Phase::Decode : Phase::Prefill;
      call.role = Role::Dense;
      call.p0 = call.phase == Phase::Prefill ? n0 : 0;
      cpu::attend(&pool_, attention_workspace_, call, cache_view(sg, layer), nullptr);
      for (int t = 0; t < count; ++t) {
        s.stats.keys_read += static_cast<double>(n0 + t + 1) * c_.hq;
        s.stats.keys_dense += static_cast<double>(n0 + t + 1) * c_.hq;
      }
      return;
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    constexpr int kQueriesPerTask = 16;
    const int query_blocks = (count + kQueriesPerTask - 1) / kQueriesPerTask;
    pool_.parallel_for(c_.hq * query_blocks, [&](int task) {
      const int h = task / query_blocks, g = h / group;
      const int t0 = (task % query_blocks) * kQueriesPerTask, t1 = std::min(count, t0 + kQueriesPerTask);
      std::vector<float> scores(static_cast<size_t>(n0 + count));
      // The keys and values the task's queries see, n0 + t0's first visible key .. n0 + t1 - 1,
      // as fp32.
      const int first_row = first_visible_key(n0 + t0);
      const int64_t values_read = static_cast<int64_t>(n0 + t1 - first_row) * d;
      std::vector<float> widened_keys, widened_values;  // f16 cache only
      const float* keys = nullptr;
      const float* values = nullptr;
      with_cache(s, [&](const auto& k_layers, const auto& v_layers) {
        const size_t offset = (static_cast<size_t>(g) * s.capacity + first_row) * d;
        keys = rows_as_f32(k_layers[static_cast<size_t>(layer)].data() + offset, values_read, widened_keys,
                           s.k_scale[static_cast<size_t>(layer)][static_cast<size_t>(g)]);
        values = rows_as_f32(v_layers[static_cast<size_t>(layer)].data() + offset, values_read, widened_values,
                             s.v_scale[static_cast<size_t>(layer)][static_cast<size_t>(g)]);
      });
      for (int t = t0; t < t1; ++t) {
        // Causal: the query at position n0 + t sees keys 0..n0 + t, or with a sliding window
        // W only the last W of them, max(0, n0 + t - W + 1)..n0 + t.
        const int first = first_visible_key(n0 + t);
        const size_t row = (static_cast<size_t>(sg.row + t) * c_.hq + h) * d;
        const size_t from = static_cast<size_t>(first - first_row) * d;
        cpu::attend_one_query(&q_[row], keys + from, values + from, n0 + t + 1 - first, d, scale, scores.data(),
                              &att_[row]);
      }
    });
    for (int t = 0; t < count; ++t) {
      const double keys = static_cast<double>(n0 + t + 1 - first_visible_key(n0 + t)) * c_.hq;
      s.stats.keys_read += keys;
      s.stats.keys_dense += keys;
    }
  }

  // The first key a query at `position` attends to in dense attention.
  int first_visible_key(int position) const {
    return c_.sliding_window > 0 ? std::max(0, position - c_.sliding_window + 1) : 0;
  }

  // Plans, attention overrides and calibration's statistics follow SPEC's attention, which has no
  // window: on a model with a sliding window they agree with it only while every key is inside it.
  void check_window_allows_full_attention(const Sequence& s, int count, const char* what) const {
    const int last = s.n + count - 1;
    KASCADE_CHECK(c_.sliding_window == 0 || last < c_.sliding_window,
                  what << " on a model with a sliding attention window of " << c_.sliding_window
                       << " tokens: position " << last << " would attend beyond the window, and Kascade's attention "
                       << "(SPEC) has no window; use dense attention (no plan) for sequences longer than the window");
  }

  // ---- attention in the oracle's layout (the plan, or an override) -------------------------------
  // The segment's q as [Hq, count, D] in qh_ and its sequence's keys and values 0..n-1 as
  // [Hkv, n, D] in kh_ and vh_: the layout the oracle takes.
  void gather_oracle_layout(const Segment& sg, int layer) {
    Sequence& s = *sg.seq;
    const int d = c_.head_dim, count = sg.count, n = s.n + count;
    qh_.resize(static_cast<size_t>(c_.hq) * count * d);
    for (int t = 0; t < count; ++t) {
      for (int h = 0; h < c_.hq; ++h) {
        std::memcpy(&qh_[(static_cast<size_t>(h) * count + t) * d],
                    &q_[(static_cast<size_t>(sg.row + t) * c_.hq + h) * d], sizeof(float) * d);
      }
    }
    kh_.resize(static_cast<size_t>(c_.hkv) * n * d);
    vh_.resize(kh_.size());
    with_cache(s, [&](const auto& k_layers, const auto& v_layers) {
      for (int g = 0; g < c_.hkv; ++g) {
        const size_t from = static_cast<size_t>(g) * s.capacity * d, to = static_cast<size_t>(g) * n * d;
        load_rows(k_layers[static_cast<size_t>(layer)].data() + from, static_cast<int64_t>(n) * d, &kh_[to],
                  s.k_scale[static_cast<size_t>(layer)][static_cast<size_t>(g)]);
        load_rows(v_layers[static_cast<size_t>(layer)].data() + from, static_cast<int64_t>(n) * d, &vh_[to],
                  s.v_scale[static_cast<size_t>(layer)][static_cast<size_t>(g)]);
      }
    });
  }

  // Attention output [Hq, count, D] back into the segment's rows of att_.
  void scatter_oracle_output(const Segment& sg, const float* out) {
    const int d = c_.head_dim, count = sg.count;
    for (int t = 0; t < count; ++t) {
      for (int h = 0; h < c_.hq; ++h) {
        std::memcpy(&att_[(static_cast<size_t>(sg.row + t) * c_.hq + h) * d],
                    &out[(static_cast<size_t>(h) * count + t) * d], sizeof(float) * d);
      }
    }
  }

  void overridden_attention(const Segment& sg, int layer) {
    Sequence& s = *sg.seq;
    gather_oracle_layout(sg, layer);
    oh_.resize(qh_.size());
    const LayerAttentionCall call{layer,    s.n,        sg.count,   c_.hq,      c_.hkv,
                                  c_.head_dim, qh_.data(), kh_.data(), vh_.data(), oh_.data()};
    s.stats.keys_read += override_(call);
    for (int t = 0; t < sg.count; ++t) s.stats.keys_dense += static_cast<double>(s.n + t + 1) * c_.hq;
    scatter_oracle_output(sg, oh_.data());
  }

  // The segment's queries, its sequence's cache for `layer` and its rows of att_ as a view:
  // the attention reads the cache in place.
  cpu::AttentionView cache_view(const Segment& sg, int layer) {
    const Sequence& s = *sg.seq;
    const int d = c_.head_dim, qd = c_.hq * d;
    cpu::AttentionView view;
    view.hq = c_.hq;
    view.hkv = c_.hkv;
    view.nq = sg.count;
    view.n = s.n + sg.count;
    view.d = d;
    view.q = q_.data() + static_cast<size_t>(sg.row) * qd;
    view.q_head_stride = d;
    view.q_token_stride = qd;
    with_cache(s, [&](const auto& k_layers, const auto& v_layers) {
      view.k = k_layers[static_cast<size_t>(layer)].data();
      view.v = v_layers[static_cast<size_t>(layer)].data();
    });
    view.kv_type = options_.cpu_kv_cache;
    view.k_scale = s.k_scale[static_cast<size_t>(layer)].data();
    view.v_scale = s.v_scale[static_cast<size_t>(layer)].data();
    view.kv_head_stride = static_cast<int64_t>(s.capacity) * d;
    view.out = att_.data() + static_cast<size_t>(sg.row) * qd;
    view.out_head_stride = d;
    view.out_token_stride = qd;
    return view;
  }

  void planned_attention(const Segment& sg, int layer) {
    Sequence& s = *sg.seq;
    const int count = sg.count, n0 = s.n, n = n0 + count, group = c_.hq / c_.hkv;
    ref::Call call;
    call.phase = count == 1 ? Phase::Decode : Phase::Prefill;
    call.role = plan_->role_of(layer);
    call.params = plan_->params();
    call.p0 = call.phase == Phase::Prefill ? n0 : 0;
    if (call.role == Role::Reuse) call.head_map = plan_->head_map[static_cast<size_t>(layer)];
    const size_t slot = static_cast<size_t>(plan_->anchor_slot(layer));
    const ref::Selection* reuse = call.role == Role::Reuse ? &s.selections[slot] : nullptr;
    ref::Selection selection =
        cpu::attend(&pool_, attention_workspace_, call, cache_view(sg, layer), reuse);
    double dense = 0;
    for (int t = 0; t < count; ++t) dense += static_cast<double>(n0 + t + 1) * c_.hq;
    s.stats.keys_dense += dense;
    if (call.role != Role::Reuse) {
      s.stats.keys_read += dense;
      s.selections[slot] = std::move(selection);
      return;
    }
    // A reuse head reads its selection, plus in prefill the diagonal keys b..t of its tile.
    const ref::Selection& sel = *reuse;
    for (int g = 0; g < c_.hkv; ++g) {
      const int set = sel.num_sets == 1 ? 0 : call.head_map.empty() ? g : call.head_map[static_cast<size_t>(g)];
      if (call.phase == Phase::Decode) {
        s.stats.keys_read += static_cast<double>(group) * sel.row_count(set, 0);
        continue;
      }
      for (int tau = 0; tau < sel.num_tiles; ++tau) {
        const int64_t b = tile_begin(n0, tau, plan_->sparsity.tile);
        const int64_t e = tile_end(n0, n, tau, plan_->sparsity.tile);
        for (int64_t t = b; t < e; ++t) {
          s.stats.keys_read += static_cast<double>(group) * (sel.row_count(set, tau) + (t - b + 1));
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
  AttentionHook hook_;
  QueryKeyHook qk_hook_;
  AttentionOverride override_;
  // Scratch buffers, reused across steps.
  std::vector<float> x_, h_, q_, k_, v_, att_, o_, gate_, up_, qh_, kh_, vh_, oh_;
  cpu::AttentionWorkspace attention_workspace_;
};

class CpuBackend final : public SequenceFront<CpuCore> {
 public:
  using SequenceFront::SequenceFront;
  const char* name() const override { return "cpu"; }
};

class CpuBatchBackend final : public BatchFront<CpuCore> {
 public:
  using BatchFront::BatchFront;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const Model& model, const Plan* plan, const BackendOptions& options) {
  return std::make_unique<CpuBackend>(model, plan, options);
}

std::unique_ptr<BatchBackend> make_cpu_batch_backend(const Model& model, const Plan* plan, int batch,
                                                     const BackendOptions& options) {
  return std::make_unique<CpuBatchBackend>(batch, model, plan, options);
}

}  // namespace kascade::engine
