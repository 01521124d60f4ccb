// Weights of the CUDA forward pass (device_weights.h): uploaded from a host Model, or generated
// on the device.
#include "device_weights.h"

#include <cmath>
#include <initializer_list>

#include "common/cuda_check.h"
#include "kascade/error.h"
#include "kascade/tensor.h"

namespace kascade::engine {

namespace {

using kascade::cuda::DeviceBuffer;

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

// RoPE frequencies in fp32, the CPU backend's table (rope_inverse_frequencies).
DeviceBuffer rope_frequencies(const ModelConfig& c) { return upload_f32(rope_inverse_frequencies(c)); }

void check_config(const ModelConfig& c) {
  KASCADE_CHECK(c.layers > 0 && c.dim > 0 && c.ffn > 0 && c.hq > 0 && c.hkv > 0 && c.head_dim > 0 && c.vocab > 0,
                "model " << c.name << ": every dimension must be positive (layers " << c.layers << ", dim " << c.dim
                         << ", ffn " << c.ffn << ", heads " << c.hq << "/" << c.hkv << ", head dim " << c.head_dim
                         << ", vocab " << c.vocab << ")");
  KASCADE_CHECK(c.rope_freq_factors.empty() || static_cast<int>(c.rope_freq_factors.size()) == c.head_dim / 2,
                "model " << c.name << ": " << c.rope_freq_factors.size() << " rope frequency factors for head dim "
                         << c.head_dim << " (expected " << c.head_dim / 2 << ")");
}

size_t held(const DeviceBuffer& b) { return b.bytes(); }

// Fills device buffers one after another, each from its own seed derived from the model's.
class RandomFiller {
 public:
  explicit RandomFiller(uint64_t seed) : seed_(seed) {}
  DeviceBuffer matrix(size_t count, float stddev, float mean = 0.f) { return make(count, true, mean, stddev); }
  DeviceBuffer vector(size_t count, float stddev, float mean = 0.f) { return make(count, false, mean, stddev); }
  // Fills `count` bf16 values at `data` (a part of a stacked matrix).
  void fill_bf16(uint16_t* data, size_t count, float stddev) { fill(data, true, count, 0.f, stddev); }

 private:
  DeviceBuffer make(size_t count, bool as_bf16, float mean, float stddev) {
    DeviceBuffer b;
    b.reserve(count * (as_bf16 ? sizeof(uint16_t) : sizeof(float)));
    fill(b.as<void>(), as_bf16, count, mean, stddev);
    return b;
  }
  void fill(void* data, bool as_bf16, size_t count, float mean, float stddev) {
    cuda::fill_normal(data, as_bf16, count, mean, stddev, seed_ * 1000003u + tensor_++, nullptr);
  }
  uint64_t seed_;
  uint64_t tensor_ = 0;
};

}  // namespace

size_t CudaWeights::bytes() const {
  size_t total = held(token_embd) + held(output) + held(output_norm) + held(inv_freq);
  for (const CudaLayerWeights& l : layers) {
    total += held(l.attn_norm) + held(l.wqkv) + held(l.bqkv) + held(l.q_norm) + held(l.k_norm) + held(l.wo) +
             held(l.ffn_norm) + held(l.w_gate_up) + held(l.w_down);
  }
  return total;
}

std::shared_ptr<const CudaWeights> upload_weights(const Model& m) {
  const ModelConfig& c = m.config;
  check_config(c);
  auto w = std::make_shared<CudaWeights>();
  w->config = c;
  w->layers.resize(static_cast<size_t>(c.layers));
  for (int l = 0; l < c.layers; ++l) {
    const LayerWeights& src = m.layers[static_cast<size_t>(l)];
    CudaLayerWeights& d = w->layers[static_cast<size_t>(l)];
    d.attn_norm = upload_f32(src.attn_norm);
    d.wqkv = upload_bf16({&src.wq, &src.wk, &src.wv});
    if (c.qkv_bias) {
      std::vector<float> bias(src.bq);
      bias.insert(bias.end(), src.bk.begin(), src.bk.end());
      bias.insert(bias.end(), src.bv.begin(), src.bv.end());
      d.bqkv = upload_f32(bias);
    }
    if (c.qk_norm) {
      d.q_norm = upload_f32(src.q_norm);
      d.k_norm = upload_f32(src.k_norm);
    }
    d.wo = upload_bf16({&src.wo});
    d.ffn_norm = upload_f32(src.ffn_norm);
    d.w_gate_up = upload_bf16({&src.w_gate, &src.w_up});
    d.w_down = upload_bf16({&src.w_down});
  }
  w->token_embd = upload_bf16({&m.token_embd});
  if (!m.output.empty()) w->output = upload_bf16({&m.output});
  w->output_norm = upload_f32(m.output_norm);
  w->inv_freq = rope_frequencies(c);
  return w;
}

std::shared_ptr<const CudaWeights> random_weights(const ModelConfig& c, uint64_t seed) {
  check_config(c);
  constexpr float kQkGain = 1.5f;        // q/k entries of std ~1.5: scores of std ~2, flat attention
  constexpr float kOutputScale = 0.5f;   // block outputs at half the residual's scale
  constexpr float kNormSpread = 0.1f;
  constexpr float kBiasStd = 0.1f;
  const size_t dim = static_cast<size_t>(c.dim), qd = static_cast<size_t>(c.hq) * c.head_dim,
               kvd = static_cast<size_t>(c.hkv) * c.head_dim, ffn = static_cast<size_t>(c.ffn),
               vocab = static_cast<size_t>(c.vocab);
  const float in_scale = 1.f / std::sqrt(static_cast<float>(dim));
  auto w = std::make_shared<CudaWeights>();
  w->config = c;
  RandomFiller f(seed);
  w->token_embd = f.matrix(vocab * dim, 1.f);
  w->layers.resize(static_cast<size_t>(c.layers));
  for (CudaLayerWeights& d : w->layers) {
    d.attn_norm = f.vector(dim, kNormSpread, 1.f);
    // [wq; wk] share one std, wv another: fill the stacked matrix in two parts.
    d.wqkv.reserve((qd + 2 * kvd) * dim * sizeof(uint16_t));
    f.fill_bf16(d.wqkv.as<uint16_t>(), (qd + kvd) * dim, kQkGain * in_scale);
    f.fill_bf16(d.wqkv.as<uint16_t>() + (qd + kvd) * dim, kvd * dim, in_scale);
    if (c.qkv_bias) d.bqkv = f.vector(qd + 2 * kvd, kBiasStd);
    if (c.qk_norm) {
      d.q_norm = f.vector(static_cast<size_t>(c.head_dim), kNormSpread, kQkGain);
      d.k_norm = f.vector(static_cast<size_t>(c.head_dim), kNormSpread, kQkGain);
    }
    d.wo = f.matrix(dim * qd, kOutputScale / std::sqrt(static_cast<float>(qd)));
    d.ffn_norm = f.vector(dim, kNormSpread, 1.f);
    d.w_gate_up = f.matrix(2 * ffn * dim, in_scale);
    d.w_down = f.matrix(dim * ffn, kOutputScale / std::sqrt(static_cast<float>(ffn)));
  }
  // An untied output matrix unless the config ties it: a random model with tied embeddings
  // predicts its input token.
  if (!c.tied_embeddings) w->output = f.matrix(vocab * dim, 1.f);
  w->output_norm = f.vector(dim, kNormSpread, 1.f);
  w->inv_freq = rope_frequencies(c);
  KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
  return w;
}

}  // namespace kascade::engine
