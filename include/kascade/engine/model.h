// kascade/engine/model.h — a Llama-family decoder's shape and fp32 weights, loaded from GGUF
// or from a Hugging Face model directory (config.json + safetensors).
//
// Supported architectures: GGUF general.architecture llama (Llama 2/3 incl. llama3 rope scaling
// through the rope_freqs tensor, SmolLM2, Mistral with llama.attention.sliding_window), qwen2
// (q/k/v bias) and qwen3 (per-head q/k RMSNorm); HF LlamaForCausalLM (llama3 rope scaling
// from rope_scaling / rope_parameters), MistralForCausalLM (sliding_window), Qwen2ForCausalLM,
// Qwen3ForCausalLM. Every tensor is checked against the shape the config implies and converted
// to fp32 at load; a missing tensor, a wrong shape, a tensor no layer reads (HF) or an
// unsupported option is an error naming it.
//
//   kascade::engine::GgufFile gguf = kascade::engine::GgufFile::open(path);
//   kascade::engine::Model model = kascade::engine::load_model(gguf);
//   kascade::engine::Model hf = kascade::engine::load_hf_model("path/to/hf_dir");
//   model.config.layers, model.config.hq, ...;   model.layers[l].wq  // [hq*head_dim][dim] row-major
//   // The CPU backend's choice: matrices stay in their GGUF block type (LayerWeights::quantized,
//   // the fp32 vectors left empty); the CUDA backend needs WeightStorage::Fp32.
//   kascade::engine::Model small = kascade::engine::load_model(gguf, kascade::engine::WeightStorage::Quantized);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kascade::engine {

class GgufFile;
enum class GgmlType : uint32_t;  // kascade/engine/gguf.h

// How load_model keeps the weight matrices: all fp32, or (for the CPU backend) each matrix
// stored as Q4_0/Q4_1/Q8_0/Q4_K/Q6_K/F16/BF16 in the file kept in that type.
enum class WeightStorage { Fp32, Quantized };

// A matrix [rows][cols] in a GGUF block type: each row is cols / block_elements(type) blocks.
struct QuantizedMatrix {
  GgmlType type{};
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> data;
  bool empty() const { return data.empty(); }
  int64_t row_bytes() const;
  const uint8_t* row(int64_t r) const { return data.data() + r * row_bytes(); }
};

enum class Architecture { Llama, Qwen2, Qwen3 };
const char* to_string(Architecture a);

// How RoPE pairs the dimensions of a head: GGUF llama weights are permuted so that adjacent
// dimensions (2i, 2i+1) form a pair (ggml's "normal" mode); Qwen keeps HF's halves (i, i+D/2).
enum class RopeStyle { Adjacent, Halves };

struct ModelConfig {
  std::string name;
  Architecture arch = Architecture::Llama;
  int layers = 0;
  int dim = 0;         // residual width
  int ffn = 0;         // SwiGLU hidden width
  int hq = 0;          // query heads
  int hkv = 0;         // key/value heads
  int head_dim = 0;
  int vocab = 0;
  int context = 0;     // trained context length
  // Sliding-window attention (Mistral): a query at position t sees keys max(0, t-W+1)..t.
  // 0 means no window (every causal key).
  int sliding_window = 0;
  float rms_eps = 1e-5f;
  float rope_base = 10000.f;
  float rope_position_scale = 1.f;       // linear rope scaling: positions are divided by this
  RopeStyle rope_style = RopeStyle::Adjacent;
  std::vector<float> rope_freq_factors;  // [head_dim/2] divisors of the frequencies (llama3), or empty
  bool qkv_bias = false;
  bool qk_norm = false;
  bool tied_embeddings = false;          // logits use token_embd when there is no output.weight
};

struct LayerWeights {
  std::vector<float> attn_norm;          // [dim]
  std::vector<float> wq, wk, wv, wo;     // [hq*D][dim], [hkv*D][dim], [hkv*D][dim], [dim][hq*D]
  std::vector<float> bq, bk, bv;         // qwen2 only
  std::vector<float> q_norm, k_norm;     // [D], qwen3 only
  std::vector<float> ffn_norm;           // [dim]
  std::vector<float> w_gate, w_up;       // [ffn][dim]
  std::vector<float> w_down;             // [dim][ffn]
  // WeightStorage::Quantized: the matrices kept in their file type; each one held here leaves
  // its fp32 vector above empty.
  struct Quantized {
    QuantizedMatrix wq, wk, wv, wo, w_gate, w_up, w_down;
  } quantized;
};

struct Model {
  ModelConfig config;
  std::vector<float> token_embd;         // [vocab][dim]
  std::vector<LayerWeights> layers;
  std::vector<float> output_norm;        // [dim]
  std::vector<float> output;             // [vocab][dim]; empty when tied to token_embd
  // WeightStorage::Quantized: token_embd / output in their file type (the fp32 vectors empty).
  QuantizedMatrix token_embd_quantized, output_quantized;
  const float* output_matrix() const { return output.empty() ? token_embd.data() : output.data(); }
  // Bytes the weights occupy in memory (fp32 vectors and quantized matrices).
  size_t weight_bytes() const;
  // True when any matrix is held quantized (only the CPU backend reads those).
  bool has_quantized_weights() const;
};

// Reads the config from the metadata and every weight from the tensors: dequantized to fp32, or
// with WeightStorage::Quantized the matrices in a block type kept as they are.
Model load_model(const GgufFile& gguf, WeightStorage storage = WeightStorage::Fp32);
// The config alone (no tensor is read): for tools that only need the shape.
ModelConfig read_config(const GgufFile& gguf);

// A Hugging Face directory: config.json and model.safetensors or model.safetensors.index.json
// with its shards. HF checkpoints keep q/k in rotate-half order: rope_style is Halves.
Model load_hf_model(const std::string& dir);
ModelConfig read_hf_config(const std::string& dir);

// The exact shapes of known models, for random-weight benchmarks and tests: "llama-3.1-8b"
// (32 layers, hidden 4096, 32 q / 8 kv heads of 128, FFN 14336, vocab 128256, rope base 500000
// with llama3 scaling) and "smollm2-135m" (30 layers, hidden 576, 9 q / 3 kv heads of 64, FFN
// 1536, vocab 49152, tied embeddings). Unknown names throw naming the known ones.
ModelConfig known_model_shape(const std::string& name);

// RoPE inverse frequencies [head_dim / 2] in fp32, as the reference implementations compute
// them: base^(-2i/D), divided by rope_freq_factors[i] when the model has them (llama3). The CPU
// and CUDA backends both use these values, so their rotations agree to the last bit of the table.
std::vector<float> rope_inverse_frequencies(const ModelConfig& config);

// Llama 3's rope scaling as divisors of the base frequencies (ModelConfig::rope_freq_factors,
// what the GGUF rope_freqs tensor holds): wavelengths beyond original/low_freq_factor are slowed
// by `factor`, those below original/high_freq_factor kept, the band between interpolated
// (transformers' _compute_llama3_parameters; llama.cpp's convert_hf_to_gguf writes the same).
// Llama-3.1: factor 8, low 1, high 4, original context 8192.
std::vector<float> llama3_rope_divisors(int head_dim, double rope_base, double factor, double low_freq_factor,
                                        double high_freq_factor, double original_context);

}  // namespace kascade::engine
