// Model loading from a Hugging Face directory: config.json -> ModelConfig, safetensors (one file
// or shards) -> fp32 weights under HF's tensor names, with shape checks and no tensor left over.
#include <cmath>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "kascade/engine/model.h"
#include "kascade/engine/safetensors.h"
#include "kascade/error.h"
#include "kascade/json.h"

namespace kascade::engine {

namespace {

using Json = nlohmann::json;

constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxWidth = 1 << 18;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxVocab = 1 << 22;
constexpr int64_t kMaxContext = 1 << 24;

struct ConfigReader {
  const Json& j;
  const std::string& file;

  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }
  int integer(const char* key, int64_t lo, int64_t hi) const {
    KASCADE_CHECK(has(key), file << ": missing '" << key << "'");
    KASCADE_CHECK(j[key].is_number_integer(), file << ": '" << key << "' is not an integer");
    const int64_t v = j[key].get<int64_t>();
    KASCADE_CHECK(v >= lo && v <= hi, file << ": " << key << " = " << v << " is outside [" << lo << ", " << hi << "]");
    return static_cast<int>(v);
  }
  int integer_or(const char* key, int64_t lo, int64_t hi, int fallback) const {
    return has(key) ? integer(key, lo, hi) : fallback;
  }
  double number(const Json& obj, const char* key, const std::string& where) const {
    KASCADE_CHECK(obj.contains(key) && obj[key].is_number(), file << ": " << where << " needs a number '" << key << "'");
    return obj[key].get<double>();
  }
  bool boolean_or(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    KASCADE_CHECK(j[key].is_boolean(), file << ": '" << key << "' is not true or false");
    return j[key].get<bool>();
  }
};

std::vector<float> llama3_frequency_divisors(const Json& rope, const ConfigReader& r, int head_dim, double base) {
  const double factor = r.number(rope, "factor", "llama3 rope scaling");
  const double low = r.number(rope, "low_freq_factor", "llama3 rope scaling");
  const double high = r.number(rope, "high_freq_factor", "llama3 rope scaling");
  const double original = r.number(rope, "original_max_position_embeddings", "llama3 rope scaling");
  KASCADE_CHECK(factor > 0 && low > 0 && high > low && original > 0,
                r.file << ": llama3 rope scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor, "
                          "original_max_position_embeddings > 0");
  return llama3_rope_divisors(head_dim, base, factor, low, high, original);
}

ModelConfig parse_hf_config(const Json& j, const std::string& file) {
  KASCADE_CHECK(j.is_object(), file << ": not a JSON object");
  const ConfigReader r{j, file};
  ModelConfig c;
  std::string arch;
  if (r.has("architectures")) {
    KASCADE_CHECK(j["architectures"].is_array() && j["architectures"].size() == 1 && j["architectures"][0].is_string(),
                  file << ": 'architectures' must list one class name");
    arch = j["architectures"][0].get<std::string>();
  } else if (r.has("model_type") && j["model_type"].is_string()) {
    arch = j["model_type"].get<std::string>();
  }
  bool windowed = false;
  if (arch == "LlamaForCausalLM" || arch == "llama") {
    c.arch = Architecture::Llama;
  } else if (arch == "MistralForCausalLM" || arch == "mistral") {
    c.arch = Architecture::Llama;  // Llama's computation with a sliding attention window
    windowed = true;
  } else if (arch == "Qwen2ForCausalLM" || arch == "qwen2") {
    c.arch = Architecture::Qwen2;
  } else if (arch == "Qwen3ForCausalLM" || arch == "qwen3") {
    c.arch = Architecture::Qwen3;
  } else {
    KASCADE_FAIL(file << ": architecture '" << (arch.empty() ? "(none given)" : arch)
                      << "' is not supported (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
                         "Qwen3ForCausalLM)");
  }
  c.name = r.has("_name_or_path") && j["_name_or_path"].is_string() && !j["_name_or_path"].get<std::string>().empty()
               ? j["_name_or_path"].get<std::string>()
               : arch;
  KASCADE_CHECK(!r.has("quantization_config"), file << ": quantized checkpoints are not supported");
  if (r.has("hidden_act")) {
    KASCADE_CHECK(j["hidden_act"] == "silu", file << ": hidden_act " << j["hidden_act"].dump() << " is not supported (silu only)");
  }
  c.layers = r.integer("num_hidden_layers", 1, kMaxLayers);
  c.dim = r.integer("hidden_size", 1, kMaxWidth);
  c.ffn = r.integer("intermediate_size", 1, kMaxWidth);
  c.hq = r.integer("num_attention_heads", 1, kMaxHeads);
  c.hkv = r.integer_or("num_key_value_heads", 1, kMaxHeads, c.hq);
  KASCADE_CHECK(c.hq % c.hkv == 0, file << ": num_attention_heads " << c.hq << " is not a multiple of num_key_value_heads " << c.hkv);
  KASCADE_CHECK(r.has("head_dim") || c.dim % c.hq == 0, file << ": hidden_size " << c.dim << " is not a multiple of "
                                                                 << c.hq << " heads and head_dim is not given");
  c.head_dim = r.integer_or("head_dim", 2, 4096, c.dim / c.hq);
  KASCADE_CHECK(c.head_dim % 2 == 0, file << ": head_dim " << c.head_dim << " must be even (RoPE pairs dimensions)");
  c.vocab = r.integer("vocab_size", 1, kMaxVocab);
  c.context = r.integer_or("max_position_embeddings", 1, kMaxContext, 4096);
  KASCADE_CHECK(r.has("rms_norm_eps") && j["rms_norm_eps"].is_number(), file << ": missing 'rms_norm_eps'");
  c.rms_eps = j["rms_norm_eps"].get<float>();
  KASCADE_CHECK(c.rms_eps > 0 && c.rms_eps < 1, file << ": rms_norm_eps " << c.rms_eps << " is not in (0, 1)");
  c.tied_embeddings = r.boolean_or("tie_word_embeddings", false);
  c.rope_style = RopeStyle::Halves;  // HF checkpoints keep q/k in rotate-half order
  c.qkv_bias = c.arch == Architecture::Qwen2;
  c.qk_norm = c.arch == Architecture::Qwen3;
  // Llama/Mistral/Qwen3 may declare biases; q/k/v/o biases (or MLP biases) are not supported.
  KASCADE_CHECK(c.arch == Architecture::Qwen2 || !r.boolean_or("attention_bias", false),
                file << ": attention_bias is not supported for " << arch);
  KASCADE_CHECK(!r.boolean_or("mlp_bias", false), file << ": mlp_bias is not supported");
  if (r.has("partial_rotary_factor")) {
    KASCADE_CHECK(j["partial_rotary_factor"] == 1 || j["partial_rotary_factor"] == 1.0,
                  file << ": partial_rotary_factor " << j["partial_rotary_factor"].dump() << " is not supported");
  }

  // RoPE: transformers 4 writes rope_theta and rope_scaling; transformers 5 writes
  // rope_parameters {rope_type, rope_theta, ...}.
  Json rope = r.has("rope_parameters") ? j["rope_parameters"] : r.has("rope_scaling") ? j["rope_scaling"] : Json::object();
  KASCADE_CHECK(rope.is_object(), file << ": rope_parameters / rope_scaling is not an object");
  double base = 10000.0;
  if (rope.contains("rope_theta")) base = r.number(rope, "rope_theta", "rope_parameters");
  else if (r.has("rope_theta")) base = r.number(j, "rope_theta", "the config");
  KASCADE_CHECK(base > 1, file << ": rope_theta " << base << " must exceed 1");
  c.rope_base = static_cast<float>(base);
  const std::string rope_type = rope.contains("rope_type") ? rope["rope_type"].get<std::string>()
                                : rope.contains("type")    ? rope["type"].get<std::string>()
                                                           : "default";
  if (rope_type == "llama3") {
    c.rope_freq_factors = llama3_frequency_divisors(rope, r, c.head_dim, base);
  } else if (rope_type == "linear") {
    c.rope_position_scale = static_cast<float>(r.number(rope, "factor", "linear rope scaling"));
    KASCADE_CHECK(c.rope_position_scale > 0, file << ": linear rope scaling factor must be positive");
  } else {
    KASCADE_CHECK(rope_type == "default", file << ": rope type '" << rope_type
                                               << "' is not supported (supported: default, linear, llama3)");
  }

  // Sliding window: Mistral's `sliding_window` (null: none). Qwen2/Qwen3 carry a sliding_window
  // value that applies only with use_sliding_window, and then only to some layers: not supported.
  if (windowed && r.has("sliding_window")) {
    c.sliding_window = r.integer("sliding_window", 1, kMaxContext);
  }
  if (c.arch == Architecture::Qwen2 || c.arch == Architecture::Qwen3) {
    KASCADE_CHECK(!r.boolean_or("use_sliding_window", false),
                  file << ": use_sliding_window (a window on some layers only) is not supported");
  }
  return c;
}

std::string shape_string(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

}  // namespace

ModelConfig read_hf_config(const std::string& dir) {
  const std::string file = dir + "/config.json";
  return parse_hf_config(parse_json_strict(read_text_file(file, 16u << 20), file), file);
}

Model load_hf_model(const std::string& dir) {
  Model m;
  m.config = read_hf_config(dir);
  const ModelConfig& c = m.config;
  const SafetensorsSet weights = SafetensorsSet::open_directory(dir);
  std::set<std::string> used;
  // A tensor with exactly the PyTorch shape `shape` (outermost first), as fp32.
  auto load = [&](const std::string& name, std::vector<int64_t> shape) {
    KASCADE_CHECK(weights.has_tensor(name), weights.source() << ": missing tensor '" << name << "' (needed by "
                                                             << c.name << ")");
    const SafetensorsTensor& t = weights.tensor(name);
    KASCADE_CHECK(t.shape == shape, weights.source() << ": tensor '" << name << "' has shape " << shape_string(t.shape)
                                                     << ", expected " << shape_string(shape));
    used.insert(name);
    return to_float(t);
  };
  const int64_t dim = c.dim, ffn = c.ffn, qd = int64_t{c.hq} * c.head_dim, kvd = int64_t{c.hkv} * c.head_dim;
  m.layers.resize(static_cast<size_t>(c.layers));
  for (int l = 0; l < c.layers; ++l) {
    const std::string b = "model.layers." + std::to_string(l) + ".";
    LayerWeights& w = m.layers[static_cast<size_t>(l)];
    w.attn_norm = load(b + "input_layernorm.weight", {dim});
    w.wq = load(b + "self_attn.q_proj.weight", {qd, dim});
    w.wk = load(b + "self_attn.k_proj.weight", {kvd, dim});
    w.wv = load(b + "self_attn.v_proj.weight", {kvd, dim});
    w.wo = load(b + "self_attn.o_proj.weight", {dim, qd});
    if (c.qkv_bias) {
      w.bq = load(b + "self_attn.q_proj.bias", {qd});
      w.bk = load(b + "self_attn.k_proj.bias", {kvd});
      w.bv = load(b + "self_attn.v_proj.bias", {kvd});
    }
    if (c.qk_norm) {
      w.q_norm = load(b + "self_attn.q_norm.weight", {c.head_dim});
      w.k_norm = load(b + "self_attn.k_norm.weight", {c.head_dim});
    }
    w.ffn_norm = load(b + "post_attention_layernorm.weight", {dim});
    w.w_gate = load(b + "mlp.gate_proj.weight", {ffn, dim});
    w.w_up = load(b + "mlp.up_proj.weight", {ffn, dim});
    w.w_down = load(b + "mlp.down_proj.weight", {dim, ffn});
    // Old checkpoints store RoPE's inverse frequencies as a buffer: recomputed, not read.
    used.insert(b + "self_attn.rotary_emb.inv_freq");
  }
  m.token_embd = load("model.embed_tokens.weight", {c.vocab, dim});
  m.output_norm = load("model.norm.weight", {dim});
  if (c.tied_embeddings) {
    used.insert("lm_head.weight");  // transformers ties it to the embedding whatever the file holds
  } else {
    m.output = load("lm_head.weight", {c.vocab, dim});
  }
  // A tensor nothing reads means a different architecture (biases, extra norms): refuse it.
  for (const std::string& name : weights.names()) {
    KASCADE_CHECK(used.count(name), weights.source() << ": tensor '" << name << "' is not part of " << c.name
                                                     << " as kascade computes it (unsupported architecture variant)");
  }
  return m;
}

}  // namespace kascade::engine
