// bench/bench_engine.cpp — kascade-bench engine: the whole CUDA engine (all layers, GEMMs, paged KV,
// attention) on random-weight models of real shapes, dense vs Kascade, prefill and decode tokens/s.
//
// For every model, context n, batch B and attention (dense; Kascade with layer 0 plus four anchors
// evenly spaced, every other layer reusing, --rho): B random prompts of n tokens are prefilled
// together (chunks of --prefill-chunk tokens per sequence, one step for all B), then
// greedy decode steps of all B sequences in four blocks of --decode-steps, with CUDA graphs and
// without in turn. Times are wall clock around the engine's calls (they end in a host copy of the
// logits), after an untimed warm-up (a short prefill and a few decode steps: cuBLAS heuristics,
// buffers, graph capture).
// prefill tokens/s = B n / time; decode tokens/s = B steps / time.
//
// Weights are generated on the GPU (bf16, a fixed seed), so the 8B shape needs no 32 GB host model.
// Before each configuration the bench adds up weights, KV cache and step scratch and compares
// them with the free device memory: a configuration that does not fit is recorded as skipped with
// both numbers, never run into an allocation failure.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bench_harness.h"
#include "common/cuda_check.h"
#include "kascade/attention_prefill.h"
#include "kascade/engine/cuda_backend.h"
#include "kascade/engine/model.h"
#include "kascade/error.h"
#include "kascade/plan.h"

namespace kascade::bench {
namespace {

using engine::ModelConfig;

constexpr uint64_t kWeightSeed = 20251216;
constexpr int kWarmupDecodeSteps = 3;  // the first captures the graph
constexpr int kDecodeBlocks = 4;       // graphs, eager, graphs, eager
constexpr int kScheduleAnchorsBesidesLayer0 = 4;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr size_t kMemoryMargin = size_t{2} << 30;  // cuBLAS, CUDA context growth, fragmentation

ModelConfig model_config(const std::string& key) {
  try {
    return engine::known_model_shape(key);
  } catch (const Error& e) {
    KASCADE_FAIL("--models: " << e.what());
  }
}

// Layer 0 and four more anchors every layers / 5 layers, the rest reuse with the identity map.
Plan schedule_plan(const ModelConfig& c, double rho) {
  const int stride = c.layers / (kScheduleAnchorsBesidesLayer0 + 1);
  std::vector<int> anchors;
  for (int a = 0; a <= kScheduleAnchorsBesidesLayer0; ++a) anchors.push_back(a * stride);
  Plan plan = make_uniform_plan(c.name, c.layers, c.hq, c.hkv, c.head_dim, anchors);
  plan.sparsity.rho = rho;
  return plan;
}

// Device bytes a configuration needs beyond the weights: KV cache and the largest step's scratch.
size_t step_bytes(const ModelConfig& c, int batch, int reserve_tokens, int chunk) {
  const size_t kv = size_t{2} * c.layers * batch * static_cast<size_t>(reserve_tokens) * c.hkv * c.head_dim * 2;
  const size_t rows = static_cast<size_t>(batch) * chunk;
  const size_t qkv = static_cast<size_t>(c.hq + 2 * c.hkv) * c.head_dim, q = static_cast<size_t>(c.hq) * c.head_dim;
  // x, o fp32; h bf16; qkv fp32; q, att bf16; gate_up fp32; act bf16 — per row.
  const size_t per_row = c.dim * 4 * 2 + c.dim * 2 + qkv * 4 + q * 2 * 2 + 2 * c.ffn * 4 + c.ffn * 2;
  const size_t anchor_workspace = rows * c.hq * 4 + kPrefillMassBudgetBytes;
  const size_t logits = static_cast<size_t>(batch) * c.vocab * 4;
  return kv + rows * per_row + anchor_workspace + logits;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<std::vector<int32_t>> random_prompts(int batch, int tokens, int vocab, std::mt19937_64& rng) {
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(batch));
  for (auto& p : prompts) {
    p.resize(static_cast<size_t>(tokens));
    for (int32_t& t : p) t = dist(rng);
  }
  return prompts;
}

std::vector<std::vector<int32_t>> greedy_next(const std::vector<std::vector<float>>& logits) {
  std::vector<std::vector<int32_t>> next(logits.size());
  for (size_t b = 0; b < logits.size(); ++b) {
    next[b] = {static_cast<int32_t>(std::max_element(logits[b].begin(), logits[b].end()) - logits[b].begin())};
  }
  return next;
}

class EngineMode final : public Mode {
 public:
  const char* name() const override { return "engine"; }
  const char* usage() const override {
    return "  --models llama-3.1-8b,smollm2-135m  random-weight models of these shapes\n"
           "  --contexts 8192,32768            prompt tokens per sequence\n"
           "  --batches 1,8                    sequences decoded together\n"
           "  --decode-steps 32                timed decode steps per block (two blocks with graphs, two without)\n"
           "  --prefill-chunk 2048             prefill tokens per sequence and step\n";
  }
  bool set_option(const std::string& option, const std::string& value) override {
    if (option == "--models") {
      models_ = split_list(option, value);
      for (const std::string& m : models_) model_config(m);  // unknown names fail now
    } else if (option == "--contexts") {
      contexts_ = int_list(option, value);
    } else if (option == "--batches") {
      batches_ = int_list(option, value);
    } else if (option == "--decode-steps") {
      decode_steps_ = parse_positive_int(option, value);
    } else if (option == "--prefill-chunk") {
      chunk_ = parse_positive_int(option, value);
    } else {
      return false;
    }
    return true;
  }
  int warmups() const override { return 0; }

  void measure(const CommonOptions& options, const Baselines&, ColdL2Timer&, std::mt19937_64& rng,
               json& records) override {
    for (const std::string& key : models_) {
      const ModelConfig config = model_config(key);
      const auto start = std::chrono::steady_clock::now();
      const auto weights = engine::random_cuda_weights(config, kWeightSeed);
      std::printf("%s: %.2f GiB of bf16 weights generated in %.2f s\n", config.name.c_str(),
                  static_cast<double>(engine::cuda_weight_bytes(*weights)) / kGiB, seconds_since(start));
      const Plan plan = schedule_plan(config, options.rho);
      for (int context : contexts_) {
        for (int batch : batches_) {
          for (const Plan* p : {static_cast<const Plan*>(nullptr), &plan}) {
            measure_one(config, weights, p, context, batch, rng, records);
          }
        }
      }
    }
  }

 private:
  static std::vector<int> int_list(const std::string& option, const std::string& value) {
    std::vector<int> out;
    for (const std::string& item : split_list(option, value)) out.push_back(parse_positive_int(option, item));
    return out;
  }

  json base_record(const ModelConfig& c, const Plan* plan, int context, int batch) const {
    json r;
    r["phase"] = "e2e";
    r["impl"] = "kascade-engine-cuda";
    r["role"] = plan ? "schedule" : "dense";
    r["model"] = c.name;
    r["layers"] = c.layers;
    r["dim"] = c.dim;
    r["ffn"] = c.ffn;
    r["vocab"] = c.vocab;
    r["batch"] = batch;
    r["context"] = context;
    r["hq"] = c.hq;
    r["hkv"] = c.hkv;
    r["head_dim"] = c.head_dim;
    r["dtype"] = "bf16";
    r["rho"] = plan ? json(plan->sparsity.rho) : json(1.0);
    r["anchors"] = plan ? json(plan->anchors) : json::array();
    r["page_size"] = 16;
    r["prefill_chunk"] = chunk_;
    return r;
  }

  void measure_one(const ModelConfig& c, const std::shared_ptr<const engine::CudaWeights>& weights, const Plan* plan,
                   int context, int batch, std::mt19937_64& rng, json& records) {
    const char* attention = plan ? "kascade" : "dense";
    const int reserve = context + kWarmupDecodeSteps + kDecodeBlocks * (decode_steps_ + 1);
    size_t free_bytes = 0, total_bytes = 0;
    KASCADE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const size_t needed = step_bytes(c, batch, reserve, std::min(chunk_, context)) + kMemoryMargin;
    json base = base_record(c, plan, context, batch);
    if (needed > free_bytes) {
      base["stage"] = "skipped";
      base["reason"] = "needs " + std::to_string(needed / kGiB) + " GiB beyond the weights, " +
                       std::to_string(free_bytes / kGiB) + " GiB free";
      std::printf("%s %s n=%d B=%d: skipped (%s)\n", c.name.c_str(), attention, context, batch,
                  base["reason"].get<std::string>().c_str());
      records.push_back(base);
      return;
    }
    engine::BackendOptions bo;
    bo.prefill_chunk = chunk_;
    engine::CudaOptions co;
    co.reserve_tokens = reserve;
    auto backend = engine::make_cuda_batch_backend(weights, plan, batch, bo, co);
    const auto prompts = random_prompts(batch, context, c.vocab, rng);

    // Warm-up: one chunk per sequence and a few decode steps (cuBLAS heuristics, buffers, the graph).
    std::vector<std::vector<int32_t>> head(prompts.size());
    for (size_t b = 0; b < prompts.size(); ++b) {
      head[b].assign(prompts[b].begin(), prompts[b].begin() + std::min(chunk_, context));
    }
    auto logits = backend->forward(head);
    for (int s = 0; s < kWarmupDecodeSteps; ++s) logits = backend->forward(greedy_next(logits));
    backend->reset();

    auto start = std::chrono::steady_clock::now();
    logits = backend->forward(prompts);
    const double prefill_s = seconds_since(start);
    const double prefill_keys = backend->stats(0).keys_read_fraction();

    json prefill = base;
    prefill["stage"] = "prefill";
    prefill["tokens"] = static_cast<int64_t>(batch) * context;
    prefill["ms"] = prefill_s * 1e3;
    prefill["tokens_per_s"] = batch * static_cast<double>(context) / prefill_s;
    prefill["keys_read_fraction"] = prefill_keys;
    records.push_back(prefill);
    std::printf("%s %-7s n=%-6d B=%d prefill %9.1f ms %10.0f tokens/s  keys read %.3f\n", c.name.c_str(), attention,
                context, batch, prefill_s * 1e3, batch * static_cast<double>(context) / prefill_s, prefill_keys);

    // Graphs and eager launches alternate (G, E, G, E blocks of --decode-steps steps) so that clock
    // and power drift after the prefill weighs on both alike; each mode reports its two blocks'
    // mean.
    double block_s[2][kDecodeBlocks / 2] = {};
    int first_context[2] = {0, 0};
    for (int block = 0; block < kDecodeBlocks; ++block) {
      const bool graphs = block % 2 == 0;
      backend->set_decode_graphs(graphs);
      logits = backend->forward(greedy_next(logits));  // untimed: a graph's capture when it is the first
      if (block < 2) first_context[block] = backend->position(0);
      const int replays_before = backend->graph_replays();
      start = std::chrono::steady_clock::now();
      for (int s = 0; s < decode_steps_; ++s) logits = backend->forward(greedy_next(logits));
      block_s[block % 2][block / 2] = seconds_since(start);
      KASCADE_CHECK(!graphs || backend->graph_replays() - replays_before == decode_steps_,
                    "engine bench: " << backend->graph_replays() - replays_before << " of " << decode_steps_
                                     << " decode steps replayed a graph");
    }
    for (int mode = 0; mode < 2; ++mode) {
      const bool graphs = mode == 0;
      double decode_s = 0;
      json blocks = json::array();
      for (double b : block_s[mode]) {
        decode_s += b / (kDecodeBlocks / 2);
        blocks.push_back(b * 1e3 / decode_steps_);
      }
      json decode = base;
      decode["stage"] = "decode";
      decode["graphs"] = graphs;
      decode["first_decode_context"] = first_context[mode] + 1;
      decode["steps"] = decode_steps_;
      decode["block_ms"] = blocks;
      decode["ms"] = decode_s * 1e3 / decode_steps_;  // per step of all B sequences
      decode["tokens_per_s"] = batch * static_cast<double>(decode_steps_) / decode_s;
      records.push_back(decode);
      std::printf("%s %-7s n=%-6d B=%d decode %s %7.3f ms/step %9.1f tokens/s (blocks %.3f, %.3f ms/step)\n",
                  c.name.c_str(), attention, context, batch, graphs ? "graphs" : "eager ",
                  decode_s * 1e3 / decode_steps_,
                  batch * static_cast<double>(decode_steps_) / decode_s, blocks[0].get<double>(),
                  blocks[1].get<double>());
    }
    std::fflush(stdout);
  }

  std::vector<std::string> models_{"llama-3.1-8b", "smollm2-135m"};
  std::vector<int> contexts_{8192, 32768};
  std::vector<int> batches_{1, 8};
  int decode_steps_ = 32;
  int chunk_ = 2048;
};

}  // namespace

std::unique_ptr<Mode> make_engine_mode() { return std::make_unique<EngineMode>(); }

}  // namespace kascade::bench
