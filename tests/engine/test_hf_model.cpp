// Hugging Face directories as models: the CPU forward pass of the tiny fixtures (tests/data/hf,
// saved by transformers' save_pretrained, tools/make_hf_fixtures.py) against transformers' own
// fp32 logits of the same files, per architecture; controls showing that the test sees the
// rotate-half RoPE order, the llama3 scaling and Mistral's window; config.json and tensor errors;
// the sliding window against plans and the CUDA backend.
//
// Bound: at every position of every prompt the top-1 token agrees wherever the reference's top-2
// margin exceeds kTieMargin, and on the reference's top-10 ids our logits are within kMaxAbsDiff.
// Both sides compute in fp32 from the same stored weights (bf16/f16/f32 widened exactly).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../temp_dir.h"
#include "hf_test_util.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/model.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"
#include "kascade/plan.h"

using kascade::engine::Model;

using kascade::testing::error_of;
using kascade::testing::kHfData;
using kascade::testing::read_json;

namespace {

// fp32 against fp32 with different summation orders over 2-3 layers; logits are O(1-10). The
// largest difference seen when the fixtures were made was 9.9e-6 (qwen2; values stored to 1e-6).
constexpr double kMaxAbsDiff = 5e-5;
constexpr double kTieMargin = 1e-3;

struct Comparison {
  int positions = 0, top1_checked = 0, top1_wrong = 0;
  double worst = 0;  // largest |ours - reference| over the reference's top-10 ids
};

// Runs every prompt of `<model>/logits.json` through `model` and compares.
Comparison compare_with_transformers(const Model& model, const std::string& name) {
  const nlohmann::json doc = read_json(kHfData + name + "/logits.json");
  Comparison cmp;
  for (const auto& p : doc["prompts"]) {
    const std::vector<int32_t> ids = p["ids"].get<std::vector<int32_t>>();
    kascade::engine::BackendOptions opt;
    opt.prefill_chunk = 20;                   // the 48-token prompt crosses chunk boundaries
    opt.cpu_kv_cache = kascade::DType::F32;   // fp32 on both sides (the bound above)
    auto backend = kascade::engine::make_backend("cpu", model, nullptr, opt);
    const std::vector<float> logits = backend->forward(ids, /*all_logits=*/true);
    const int vocab = model.config.vocab;
    for (size_t t = 0; t < ids.size(); ++t) {
      const float* row = logits.data() + t * vocab;
      const std::vector<int> top_ids = p["top_ids"][t].get<std::vector<int>>();
      const std::vector<double> top_values = p["top_values"][t].get<std::vector<double>>();
      for (size_t k = 0; k < top_ids.size(); ++k) {
        cmp.worst = std::max(cmp.worst, std::fabs(row[top_ids[k]] - top_values[k]));
      }
      if (top_values[0] - top_values[1] > kTieMargin) {
        ++cmp.top1_checked;
        cmp.top1_wrong += static_cast<int>(std::max_element(row, row + vocab) - row) != top_ids[0];
      }
      ++cmp.positions;
    }
  }
  return cmp;
}

}  // namespace

class HfGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(HfGolden, CpuLogitsMatchTransformers) {
  const std::string name = GetParam();
  const Model model = kascade::engine::load_hf_model(kHfData + name);
  const Comparison cmp = compare_with_transformers(model, name);
  EXPECT_EQ(cmp.positions, 16 + 48 - (name == "mistral" ? 1 : 0));  // the short prompts have 15-16 tokens
  EXPECT_GT(cmp.top1_checked, cmp.positions * 9 / 10);
  EXPECT_EQ(cmp.top1_wrong, 0);
  EXPECT_LE(cmp.worst, kMaxAbsDiff);
  std::printf("hf golden %s: %d positions, %d top-1 checks, max |diff| on reference top-10 = %.2e\n", name.c_str(),
              cmp.positions, cmp.top1_checked, cmp.worst);
}

INSTANTIATE_TEST_SUITE_P(Models, HfGolden, ::testing::Values("llama", "mistral", "qwen2", "qwen3"));

TEST(HfModel, ConfigOfEachFixture) {
  const auto llama = kascade::engine::read_hf_config(kHfData + "llama");
  EXPECT_EQ(llama.layers, 3);
  EXPECT_EQ(llama.rope_style, kascade::engine::RopeStyle::Halves);
  ASSERT_EQ(llama.rope_freq_factors.size(), 8u);
  EXPECT_FLOAT_EQ(llama.rope_freq_factors[0], 1.0f);  // short wavelengths kept
  EXPECT_FLOAT_EQ(llama.rope_freq_factors[7], 8.0f);  // long ones slowed by the factor
  EXPECT_FALSE(llama.tied_embeddings);
  EXPECT_EQ(llama.sliding_window, 0);
  const auto mistral = kascade::engine::read_hf_config(kHfData + "mistral");
  EXPECT_EQ(mistral.sliding_window, 16);
  EXPECT_EQ(mistral.arch, kascade::engine::Architecture::Llama);
  const auto qwen2 = kascade::engine::read_hf_config(kHfData + "qwen2");
  EXPECT_TRUE(qwen2.qkv_bias);
  EXPECT_TRUE(qwen2.tied_embeddings);
  EXPECT_EQ(qwen2.sliding_window, 0);  // Qwen2's sliding_window value applies only with use_sliding_window
  const auto qwen3 = kascade::engine::read_hf_config(kHfData + "qwen3");
  EXPECT_TRUE(qwen3.qk_norm);
  EXPECT_EQ(qwen3.head_dim, 32);  // not hidden / heads = 16
}

// The controls: each feature, turned off, moves the logits far outside the bound, so the golden
// test above does check it.
TEST(HfModel, GoldenTestSeesRopeOrderScalingAndWindow) {
  Model llama = kascade::engine::load_hf_model(kHfData + "llama");
  llama.config.rope_style = kascade::engine::RopeStyle::Adjacent;  // GGUF's order on HF weights
  EXPECT_GT(compare_with_transformers(llama, "llama").worst, 100 * kMaxAbsDiff);
  llama.config.rope_style = kascade::engine::RopeStyle::Halves;
  llama.config.rope_freq_factors.clear();  // plain RoPE instead of llama3 scaling
  EXPECT_GT(compare_with_transformers(llama, "llama").worst, 100 * kMaxAbsDiff);

  Model mistral = kascade::engine::load_hf_model(kHfData + "mistral");
  mistral.config.sliding_window = 0;  // every causal key instead of the last 16
  EXPECT_GT(compare_with_transformers(mistral, "mistral").worst, 100 * kMaxAbsDiff);
  // The reference itself: the window changed transformers' logits of the long prompt.
  const nlohmann::json doc = read_json(kHfData + "mistral/logits.json");
  EXPECT_GT(doc["prompts"][1]["max_diff_without_window"].get<double>(), 0.1);
}

TEST(HfModel, TokenizerEncodesTheGoldenPrompts) {
  const nlohmann::json prompts = read_json(kHfData + "prompts.json")["prompts"];
  for (const std::string name : {"llama", "mistral", "qwen2", "qwen3"}) {
    const auto tok = kascade::engine::Tokenizer::from_hf_directory(kHfData + name);
    const auto& short_prompt = prompts[name][0];
    EXPECT_EQ(tok.encode(short_prompt["text"].get<std::string>()), short_prompt["ids"].get<std::vector<int32_t>>())
        << name;
  }
}

TEST(HfModel, ConfigAndTensorErrors) {
  namespace fs = std::filesystem;
  kascade::testing::TempDir dir("hf_model");
  const std::string src = kHfData + "qwen3/";
  fs::copy_file(src + "model.safetensors", dir.path() / "model.safetensors");
  const nlohmann::json original = read_json(src + "config.json");
  auto load_with = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json cfg = original;
    edit(cfg);
    std::ofstream(dir.file("config.json")) << cfg.dump();
    return error_of([&] { kascade::engine::load_hf_model(dir.path().string()); });
  };
  auto expect_error = [&](const std::function<void(nlohmann::json&)>& edit, const std::string& phrase) {
    const std::string msg = load_with(edit);
    EXPECT_NE(msg.find(phrase), std::string::npos) << "expected '" << phrase << "' in: " << msg;
  };
  EXPECT_EQ(load_with([](nlohmann::json&) {}), "");
  expect_error([](nlohmann::json& c) { c["architectures"] = {"GPT2LMHeadModel"}; },
               "architecture 'GPT2LMHeadModel' is not supported");
  expect_error([](nlohmann::json& c) { c.erase("architectures"); c.erase("model_type"); }, "(none given)");
  expect_error([](nlohmann::json& c) { c.erase("hidden_size"); }, "config.json: missing 'hidden_size'");
  expect_error([](nlohmann::json& c) { c["num_key_value_heads"] = 3; }, "not a multiple of num_key_value_heads");
  expect_error([](nlohmann::json& c) { c["rope_parameters"]["rope_type"] = "yarn"; }, "rope type 'yarn' is not supported");
  expect_error([](nlohmann::json& c) { c["use_sliding_window"] = true; }, "use_sliding_window");
  expect_error([](nlohmann::json& c) { c["hidden_act"] = "gelu"; }, "hidden_act \"gelu\"");
  expect_error([](nlohmann::json& c) { c["quantization_config"] = {{"quant_method", "gptq"}}; }, "quantized");
  // Shapes and names of tensors: one more layer than the file holds, another width, another
  // architecture whose tensors differ.
  expect_error([](nlohmann::json& c) { c["num_hidden_layers"] = 3; }, "missing tensor 'model.layers.2.input_layernorm.weight'");
  expect_error([](nlohmann::json& c) { c["intermediate_size"] = 64; }, "has shape [96, 64], expected [64, 64]");
  expect_error([](nlohmann::json& c) { c["architectures"] = {"LlamaForCausalLM"}; },
               "tensor 'model.layers.0.self_attn.k_norm.weight' is not part of");
  expect_error([](nlohmann::json& c) { c["architectures"] = {"Qwen2ForCausalLM"}; }, "missing tensor 'model.layers.0.self_attn.q_proj.bias'");
  // The transformers 4 form of the RoPE settings reads the same as the transformers 5 form.
  nlohmann::json v4 = read_json(kHfData + "llama/config.json");
  v4["rope_theta"] = v4["rope_parameters"]["rope_theta"];
  v4["rope_scaling"] = v4["rope_parameters"];
  v4["rope_scaling"].erase("rope_theta");
  v4.erase("rope_parameters");
  std::ofstream(dir.file("config.json")) << v4.dump();
  const auto from_v4 = kascade::engine::read_hf_config(dir.path().string());
  const auto from_v5 = kascade::engine::read_hf_config(kHfData + "llama");
  EXPECT_EQ(from_v4.rope_freq_factors, from_v5.rope_freq_factors);
  EXPECT_EQ(from_v4.rope_base, from_v5.rope_base);
  EXPECT_NE(error_of([] { kascade::engine::load_hf_model(kHfData + "no_such_model"); }).find("config.json"),
            std::string::npos);
}

TEST(HfModel, SlidingWindowRefusesPlansPastTheWindowAndTheCudaBackend) {
  const Model mistral = kascade::engine::load_hf_model(kHfData + "mistral");
  const auto& c = mistral.config;
  const kascade::Plan plan = kascade::make_uniform_plan("tiny-mistral", c.layers, c.hq, c.hkv, c.head_dim, {0});
  auto backend = kascade::engine::make_backend("cpu", mistral, &plan, {});
  std::vector<int32_t> ids(16, 7);
  backend->forward(ids, false);  // positions 0..15: every key is inside the window of 16
  const std::string msg = error_of([&] { backend->forward({7}, false); });
  EXPECT_NE(msg.find("sliding attention window of 16"), std::string::npos) << msg;
  EXPECT_EQ(backend->position(), 16);  // the refused step changed nothing
  // Calibration's query/key statistics score every causal key: refused past the window too.
  auto hooked = kascade::engine::make_backend("cpu", mistral, nullptr, {});
  hooked->set_query_key_hook([](int, int, int, const float*, const float*) {});
  EXPECT_NE(error_of([&] { hooked->forward(std::vector<int32_t>(17, 7), false); }).find("calibration"),
            std::string::npos);
  // Dense attention (no plan) runs past the window.
  auto dense = kascade::engine::make_backend("cpu", mistral, nullptr, {});
  EXPECT_EQ(dense->forward(std::vector<int32_t>(40, 7), false).size(), static_cast<size_t>(c.vocab));

  const std::string cuda = error_of([&] { kascade::engine::check_backend_supports("cuda", c); });
  EXPECT_NE(cuda.find("sliding attention window of 16"), std::string::npos) << cuda;
  EXPECT_EQ(error_of([&] { kascade::engine::check_backend_supports("cpu", c); }), "");
  kascade::engine::ModelConfig window_covers_context = c;
  window_covers_context.sliding_window = c.context;  // a window as long as the context is no window
  EXPECT_EQ(error_of([&] { kascade::engine::check_backend_supports("cuda", window_covers_context); }), "");
}
