// Model loading and the forward pass of every supported architecture: tiny random-weight
// llama (permuted q/k, llama3 rope_freqs, separate output matrix), qwen2 (q/k/v bias, one kv
// head, tied output) and qwen3 (q/k RMSNorm, head_dim * heads != width) models written by the
// `gguf` package, against logits of a float64 NumPy forward pass (tools/make_engine_fixtures.py).
// Then malformed model metadata.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gguf_builder.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/gguf.h"
#include "kascade/engine/model.h"
#include "kascade/error.h"

using kascade::engine::GgufFile;
using kascade::engine::test::GgufBuilder;

namespace {

const std::string kData = std::string(KASCADE_TEST_DATA) + "/engine/";

std::string load_error(const std::vector<uint8_t>& bytes) {
  try {
    const GgufFile f = GgufFile::parse(bytes.data(), bytes.size(), "model.gguf");
    kascade::engine::load_model(f);
  } catch (const kascade::Error& e) {
    return e.what();
  }
  return "";
}

// Llama metadata for a 1-layer model of width 8, 2 heads.
GgufBuilder llama_header(uint64_t tensors, uint64_t extra_kvs, const std::string& arch = "llama",
                         uint32_t heads = 2, uint32_t kv_heads = 2) {
  GgufBuilder b;
  b.header(tensors, 7 + extra_kvs).kv_str("general.architecture", arch);
  b.kv_u32(arch + ".block_count", 1).kv_u32(arch + ".embedding_length", 8).kv_u32(arch + ".feed_forward_length", 16);
  b.kv_u32(arch + ".attention.head_count", heads).kv_u32(arch + ".attention.head_count_kv", kv_heads);
  b.kv_f32(arch + ".attention.layer_norm_rms_epsilon", 1e-5f);
  return b;
}

}  // namespace

class TinyModel : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyModel, LogitsMatchNumpyForward) {
  const std::string arch = GetParam();
  const GgufFile gguf = GgufFile::open(kData + "tiny_" + arch + ".gguf");
  const kascade::engine::Model model = kascade::engine::load_model(gguf);
  EXPECT_STREQ(kascade::engine::to_string(model.config.arch), arch.c_str());
  EXPECT_EQ(model.config.qkv_bias, arch == "qwen2");
  EXPECT_EQ(model.config.qk_norm, arch == "qwen3");
  EXPECT_EQ(model.config.tied_embeddings, arch != "llama");
  EXPECT_EQ(model.config.rope_freq_factors.empty(), arch != "llama");

  std::ifstream f(kData + "tiny_logits.json");
  const nlohmann::json doc = nlohmann::json::parse(f);
  const std::vector<int32_t> tokens = doc["tokens"].get<std::vector<int32_t>>();
  const auto want = doc["logits"][arch].get<std::vector<std::vector<double>>>();
  ASSERT_EQ(want.size(), tokens.size());
  kascade::engine::BackendOptions opt;
  opt.prefill_chunk = 5;                   // chunks of 5, 5 and 3 tokens
  opt.cpu_kv_cache = kascade::DType::F32;  // the forward pass against fp64, nothing rounded
  auto backend = kascade::engine::make_backend("cpu", model, nullptr, opt);
  const std::vector<float> got = backend->forward(tokens, /*all_logits=*/true);
  const int vocab = model.config.vocab;
  ASSERT_EQ(got.size(), tokens.size() * static_cast<size_t>(vocab));
  double worst = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    for (int v = 0; v < vocab; ++v) {
      worst = std::max(worst, std::fabs(got[t * vocab + v] - want[t][static_cast<size_t>(v)]));
    }
  }
  EXPECT_LE(worst, 1e-4) << arch;  // fp32 vs fp64, logits of order 1
}

INSTANTIATE_TEST_SUITE_P(Architectures, TinyModel, ::testing::Values("llama", "qwen2", "qwen3"));

TEST(ModelLoading, UnsupportedArchitecture) {
  EXPECT_NE(load_error(llama_header(0, 0, "gpt2").bytes).find("architecture 'gpt2' is not supported"),
            std::string::npos);
}

TEST(ModelLoading, HeadsMustGroup) {
  EXPECT_NE(load_error(llama_header(0, 0, "llama", 3, 2).bytes).find("not a multiple of head_count_kv"),
            std::string::npos);
}

TEST(ModelLoading, MissingMetadataAndTensors) {
  GgufBuilder no_layers;
  no_layers.header(0, 1).kv_str("general.architecture", "llama");
  EXPECT_NE(load_error(no_layers.bytes).find("missing metadata key 'llama.block_count'"), std::string::npos);
  EXPECT_NE(load_error(llama_header(0, 0).bytes).find("missing tensor 'token_embd.weight'"), std::string::npos);
}

TEST(ModelLoading, WrongTensorShape) {
  // token_embd [8, 4] is fine; blk.0.attn_norm.weight has 7 values instead of 8.
  GgufBuilder b = llama_header(2, 0);
  b.tensor_f32("token_embd.weight", {8, 4}, 0).tensor_f32("blk.0.attn_norm.weight", 7, 128);
  b.pad_to(32).floats(32 + 8, 0.5f);
  EXPECT_NE(load_error(b.bytes).find("tensor 'blk.0.attn_norm.weight' has shape [7], expected [8]"),
            std::string::npos);
}

TEST(ModelLoading, SlidingWindowFromLlamaMetadata) {
  // A Mistral converted as "llama" with its window: read into the config (0 when absent).
  GgufBuilder b = llama_header(1, 1);
  b.kv_u32("llama.attention.sliding_window", 4096);
  b.tensor_f32("token_embd.weight", {8, 4}, 0).pad_to(32).floats(32, 0.5f);
  const GgufFile windowed = GgufFile::parse(b.bytes.data(), b.bytes.size(), "mistral.gguf");
  EXPECT_EQ(kascade::engine::read_config(windowed).sliding_window, 4096);
  GgufBuilder plain = llama_header(1, 0);
  plain.tensor_f32("token_embd.weight", {8, 4}, 0).pad_to(32).floats(32, 0.5f);
  const GgufFile none = GgufFile::parse(plain.bytes.data(), plain.bytes.size(), "llama.gguf");
  EXPECT_EQ(kascade::engine::read_config(none).sliding_window, 0);
}

TEST(ModelLoading, UnsupportedRopeScaling) {
  GgufBuilder b = llama_header(0, 1);
  b.kv_str("llama.rope.scaling.type", "yarn");
  EXPECT_NE(load_error(b.bytes).find("rope.scaling.type 'yarn' is not supported"), std::string::npos);
}

TEST(ModelLoading, NonFiniteLogitsAreAnErrorNotOutput) {
  const GgufFile gguf = GgufFile::open(kData + "tiny_llama.gguf");
  kascade::engine::Model model = kascade::engine::load_model(gguf);
  model.output_norm[3] = NAN;  // poisons every logit
  auto backend = kascade::engine::make_backend("cpu", model, nullptr, {});
  try {
    backend->forward({1, 2}, false);
    FAIL() << "NaN logits were returned";
  } catch (const kascade::Error& e) {
    EXPECT_NE(std::string(e.what()).find("is not finite"), std::string::npos) << e.what();
  }
}
