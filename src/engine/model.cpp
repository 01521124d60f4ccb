// Model loading: GGUF metadata -> ModelConfig, GGUF tensors -> fp32 weights with shape checks.
#include "kascade/engine/model.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <string>
#include <thread>

#include "kascade/engine/gguf.h"
#include "kascade/error.h"

namespace kascade::engine {

namespace {

// Caps that keep a corrupted header from asking for absurd shapes.
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxWidth = 1 << 18;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxVocab = 1 << 22;

int bounded(const GgufFile& g, const std::string& key, int64_t lo, int64_t hi) {
  const int64_t v = g.get_int(key);
  KASCADE_CHECK(v >= lo && v <= hi, g.name() << ": " << key << " = " << v << " is outside [" << lo << ", " << hi << "]");
  return static_cast<int>(v);
}

// A tensor with exactly the ggml dims `dims` (innermost first), dequantized.
std::vector<float> load_tensor(const GgufFile& g, const std::string& name, std::vector<int64_t> dims) {
  const GgufTensor& t = g.tensor(name);
  auto shape_str = [](const std::vector<int64_t>& d) {
    std::string s = "[";
    for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
    return s + "]";
  };
  KASCADE_CHECK(t.dims == dims, g.name() << ": tensor '" << name << "' has shape " << shape_str(t.dims)
                                         << ", expected " << shape_str(dims));
  std::vector<float> values = g.dequantize(t);
  g.release_tensor_pages(t);  // the fp32 copy is what the model keeps
  return values;
}

// Keeps tensor `name` in its block type when `storage` asks for it and the type is one the CPU
// kernels read (everything but F32); otherwise dequantizes it into `fp32`.
void load_matrix(const GgufFile& g, const std::string& name, std::vector<int64_t> dims, WeightStorage storage,
                 std::vector<float>& fp32, QuantizedMatrix& quantized) {
  const GgufTensor& t = g.tensor(name);
  if (storage != WeightStorage::Quantized || t.type == GgmlType::F32 || t.dims != dims) {
    fp32 = load_tensor(g, name, std::move(dims));  // also reports a wrong shape
    return;
  }
  quantized.type = t.type;
  quantized.cols = dims[0];
  quantized.rows = dims[1];
  KASCADE_CHECK(quantized.cols % ggml_block_elements(t.type) == 0 &&
                    t.nbytes == static_cast<uint64_t>(quantized.rows * quantized.row_bytes()),
                g.name() << ": tensor '" << name << "' of type " << to_string(t.type) << " has " << t.nbytes
                         << " bytes, expected " << quantized.rows << " rows of " << quantized.row_bytes());
  quantized.data.assign(t.data, t.data + t.nbytes);
  g.release_tensor_pages(t);  // resident once (the copy), not twice
}

}  // namespace

int64_t QuantizedMatrix::row_bytes() const { return cols / ggml_block_elements(type) * ggml_block_bytes(type); }

bool Model::has_quantized_weights() const {
  if (!token_embd_quantized.empty() || !output_quantized.empty()) return true;
  for (const LayerWeights& l : layers) {
    const LayerWeights::Quantized& q = l.quantized;
    for (const QuantizedMatrix* m : {&q.wq, &q.wk, &q.wv, &q.wo, &q.w_gate, &q.w_up, &q.w_down}) {
      if (!m->empty()) return true;
    }
  }
  return false;
}

const char* to_string(Architecture a) {
  switch (a) {
    case Architecture::Llama: return "llama";
    case Architecture::Qwen2: return "qwen2";
    case Architecture::Qwen3: return "qwen3";
  }
  return "?";
}

size_t Model::weight_bytes() const {
  size_t n = token_embd.size() + output_norm.size() + output.size();
  size_t quantized_bytes = token_embd_quantized.data.size() + output_quantized.data.size();
  for (const LayerWeights& l : layers) {
    const LayerWeights::Quantized& q = l.quantized;
    for (const QuantizedMatrix* m : {&q.wq, &q.wk, &q.wv, &q.wo, &q.w_gate, &q.w_up, &q.w_down}) {
      quantized_bytes += m->data.size();
    }
  }
  for (const LayerWeights& l : layers) {
    for (const auto* v : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk, &l.bv, &l.q_norm, &l.k_norm,
                          &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down}) {
      n += v->size();
    }
  }
  return n * sizeof(float) + quantized_bytes;
}

ModelConfig read_config(const GgufFile& g) {
  ModelConfig c;
  const std::string arch = g.get_string("general.architecture");
  if (arch == "llama") {
    c.arch = Architecture::Llama;
  } else if (arch == "qwen2") {
    c.arch = Architecture::Qwen2;
  } else if (arch == "qwen3") {
    c.arch = Architecture::Qwen3;
  } else {
    KASCADE_FAIL(g.name() << ": architecture '" << arch << "' is not supported (supported: llama, qwen2, qwen3)");
  }
  c.name = g.has("general.name") ? g.get_string("general.name") : arch;
  const std::string p = arch + ".";
  c.layers = bounded(g, p + "block_count", 1, kMaxLayers);
  c.dim = bounded(g, p + "embedding_length", 1, kMaxWidth);
  c.ffn = bounded(g, p + "feed_forward_length", 1, kMaxWidth);
  c.hq = bounded(g, p + "attention.head_count", 1, kMaxHeads);
  c.hkv = g.has(p + "attention.head_count_kv") ? bounded(g, p + "attention.head_count_kv", 1, kMaxHeads) : c.hq;
  KASCADE_CHECK(c.hq % c.hkv == 0, g.name() << ": head_count " << c.hq << " is not a multiple of head_count_kv " << c.hkv);
  c.head_dim = g.has(p + "attention.key_length") ? bounded(g, p + "attention.key_length", 2, 4096) : c.dim / c.hq;
  KASCADE_CHECK(c.head_dim % 2 == 0 && (g.has(p + "attention.key_length") || c.dim % c.hq == 0),
                g.name() << ": head dimension " << c.head_dim << " must be even and divide the width");
  if (g.has(p + "attention.value_length")) {
    KASCADE_CHECK(g.get_int(p + "attention.value_length") == c.head_dim,
                  g.name() << ": value_length differs from key_length (not supported)");
  }
  if (g.has(p + "rope.dimension_count")) {
    KASCADE_CHECK(g.get_int(p + "rope.dimension_count") == c.head_dim,
                  g.name() << ": rope.dimension_count " << g.get_int(p + "rope.dimension_count")
                           << " differs from the head dimension " << c.head_dim << " (partial rotary is not supported)");
  }
  c.context = g.has(p + "context_length") ? bounded(g, p + "context_length", 1, 1 << 24) : 4096;
  // Mistral converted as "llama" may carry its window; 0 (or absent) means none.
  if (g.has(p + "attention.sliding_window")) c.sliding_window = bounded(g, p + "attention.sliding_window", 0, 1 << 24);
  c.rms_eps = static_cast<float>(g.get_float(p + "attention.layer_norm_rms_epsilon"));
  KASCADE_CHECK(c.rms_eps > 0 && c.rms_eps < 1, g.name() << ": layer_norm_rms_epsilon " << c.rms_eps << " is not in (0, 1)");
  c.rope_base = g.has(p + "rope.freq_base") ? static_cast<float>(g.get_float(p + "rope.freq_base")) : 10000.f;
  KASCADE_CHECK(c.rope_base > 1, g.name() << ": rope.freq_base " << c.rope_base << " must exceed 1");
  if (g.has(p + "rope.scaling.type")) {
    const std::string type = g.get_string(p + "rope.scaling.type");
    if (type == "linear") {
      c.rope_position_scale = static_cast<float>(g.get_float(p + "rope.scaling.factor"));
      KASCADE_CHECK(c.rope_position_scale > 0, g.name() << ": rope.scaling.factor must be positive");
    } else {
      KASCADE_CHECK(type == "none", g.name() << ": rope.scaling.type '" << type
                                             << "' is not supported (supported: none, linear; llama3 via rope_freqs)");
    }
  }
  c.rope_style = c.arch == Architecture::Llama ? RopeStyle::Adjacent : RopeStyle::Halves;
  c.qkv_bias = c.arch == Architecture::Qwen2;
  c.qk_norm = c.arch == Architecture::Qwen3;
  const GgufTensor& embd = g.tensor("token_embd.weight");
  KASCADE_CHECK(embd.dims.size() == 2 && embd.dims[0] == c.dim && embd.dims[1] >= 1 && embd.dims[1] <= kMaxVocab,
                g.name() << ": token_embd.weight must be [" << c.dim << ", vocab]");
  c.vocab = static_cast<int>(embd.dims[1]);
  c.tied_embeddings = !g.has_tensor("output.weight");
  return c;
}

Model load_model(const GgufFile& g, WeightStorage storage) {
  Model m;
  m.config = read_config(g);
  const ModelConfig& c = m.config;
  const int64_t dim = c.dim, ffn = c.ffn, qd = int64_t{c.hq} * c.head_dim, kvd = int64_t{c.hkv} * c.head_dim;
  if (g.has_tensor("rope_freqs.weight")) {
    m.config.rope_freq_factors = load_tensor(g, "rope_freqs.weight", {c.head_dim / 2});
    for (float f : m.config.rope_freq_factors) {
      KASCADE_CHECK(f > 0, g.name() << ": rope_freqs.weight holds a non-positive factor " << f);
    }
  }
  m.layers.resize(static_cast<size_t>(c.layers));
  // Layers are independent: dequantize them on all cores.
  std::vector<std::exception_ptr> errors(static_cast<size_t>(c.layers));
  auto load_layer = [&](int l) {
    try {
      const std::string b = "blk." + std::to_string(l) + ".";
      LayerWeights& w = m.layers[static_cast<size_t>(l)];
      w.attn_norm = load_tensor(g, b + "attn_norm.weight", {dim});
      load_matrix(g, b + "attn_q.weight", {dim, qd}, storage, w.wq, w.quantized.wq);
      load_matrix(g, b + "attn_k.weight", {dim, kvd}, storage, w.wk, w.quantized.wk);
      load_matrix(g, b + "attn_v.weight", {dim, kvd}, storage, w.wv, w.quantized.wv);
      load_matrix(g, b + "attn_output.weight", {qd, dim}, storage, w.wo, w.quantized.wo);
      if (c.qkv_bias) {
        w.bq = load_tensor(g, b + "attn_q.bias", {qd});
        w.bk = load_tensor(g, b + "attn_k.bias", {kvd});
        w.bv = load_tensor(g, b + "attn_v.bias", {kvd});
      }
      if (c.qk_norm) {
        w.q_norm = load_tensor(g, b + "attn_q_norm.weight", {c.head_dim});
        w.k_norm = load_tensor(g, b + "attn_k_norm.weight", {c.head_dim});
      }
      w.ffn_norm = load_tensor(g, b + "ffn_norm.weight", {dim});
      load_matrix(g, b + "ffn_gate.weight", {dim, ffn}, storage, w.w_gate, w.quantized.w_gate);
      load_matrix(g, b + "ffn_up.weight", {dim, ffn}, storage, w.w_up, w.quantized.w_up);
      load_matrix(g, b + "ffn_down.weight", {ffn, dim}, storage, w.w_down, w.quantized.w_down);
    } catch (...) {
      errors[static_cast<size_t>(l)] = std::current_exception();
    }
  };
  const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int l = t; l < c.layers; l += threads) load_layer(l);
    });
  }
  for (std::thread& th : pool) th.join();
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  load_matrix(g, "token_embd.weight", {dim, c.vocab}, storage, m.token_embd, m.token_embd_quantized);
  m.output_norm = load_tensor(g, "output_norm.weight", {dim});
  if (!c.tied_embeddings) load_matrix(g, "output.weight", {dim, c.vocab}, storage, m.output, m.output_quantized);
  return m;
}

ModelConfig known_model_shape(const std::string& name) {
  ModelConfig c;
  c.name = "random-" + name + "-shape";
  c.rms_eps = 1e-5f;
  if (name == "llama-3.1-8b") {
    c.layers = 32;
    c.dim = 4096;
    c.ffn = 14336;
    c.hq = 32;
    c.hkv = 8;
    c.head_dim = 128;
    c.vocab = 128256;
    c.context = 131072;
    c.rope_base = 500000.f;
    c.rope_freq_factors = llama3_rope_divisors(c.head_dim, c.rope_base, 8, 1, 4, 8192);
  } else if (name == "smollm2-135m") {
    c.layers = 30;
    c.dim = 576;
    c.ffn = 1536;
    c.hq = 9;
    c.hkv = 3;
    c.head_dim = 64;
    c.vocab = 49152;
    c.context = 8192;
    c.rope_base = 100000.f;
    c.tied_embeddings = true;
  } else {
    KASCADE_FAIL("unknown model shape '" << name << "' (known: llama-3.1-8b, smollm2-135m)");
  }
  return c;
}

std::vector<float> rope_inverse_frequencies(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    float f = static_cast<float>(1.0 / std::pow(static_cast<double>(c.rope_base), 2.0 * i / c.head_dim));
    if (!c.rope_freq_factors.empty()) f /= c.rope_freq_factors[static_cast<size_t>(i)];
    inv_freq[static_cast<size_t>(i)] = f;
  }
  return inv_freq;
}

std::vector<float> llama3_rope_divisors(int head_dim, double rope_base, double factor, double low_freq_factor,
                                        double high_freq_factor, double original_context) {
  constexpr double kPi = 3.14159265358979323846;
  const double low_wavelen = original_context / low_freq_factor, high_wavelen = original_context / high_freq_factor;
  std::vector<float> divisors(static_cast<size_t>(head_dim / 2));
  for (int i = 0; i < head_dim / 2; ++i) {
    const double freq = 1.0 / std::pow(rope_base, 2.0 * i / head_dim);
    const double wavelen = 2 * kPi / freq;
    double d = 1.0;
    if (wavelen > low_wavelen) {
      d = factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      d = 1.0 / ((1 - smooth) / factor + smooth);
    }
    divisors[static_cast<size_t>(i)] = static_cast<float>(d);
  }
  return divisors;
}

}  // namespace kascade::engine
