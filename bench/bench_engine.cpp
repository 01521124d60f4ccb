// bench/bench_engine.cpp — kascade-bench engine: the whole CUDA engine (all layers, GEMMs, paged KV,
// attention) dense vs Kascade, prefill and decode tokens/s, on random-weight models of real shapes
// or on a model file's own weights.
//
// For every model, context n, batch B and attention (dense; Kascade with --plan, or layer 0 plus
// four anchors evenly spaced, every other layer reusing, --rho): B random prompts of n tokens are
// prefilled together (chunks of --prefill-chunk tokens per sequence, one step for all B;
// --prefill-reps times from an empty cache, the median recorded), then greedy decode steps of all
// B sequences in four blocks of --decode-steps, with CUDA graphs and without in turn. Times are
// wall clock around the engine's calls (they end in a host copy of the logits), after an untimed
// warm-up (a short prefill and a few decode steps: cuBLAS heuristics, buffers, graph capture).
// prefill tokens/s = B n / time; decode tokens/s = B steps / time; decode bytes/s = (the weights,
// read once per step, plus K and V of every key the attention statistics count as read) / step
// time: the traffic a step cannot avoid, an estimate, not a hardware counter.
//
// A --models item is a known shape (random bf16 weights generated on the GPU from a fixed seed, so
// the 8B shape needs no 32 GB host model) or a GGUF file / Hugging Face directory / "default"
// (its weights loaded on the host and uploaded as bf16). Before each configuration the bench adds
// up weights, KV cache and step scratch and compares them with the free device memory: a
// configuration that does not fit is recorded as skipped with both numbers, never run into an
// allocation failure.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bench_harness.h"
#include "common/cuda_check.h"
#include "kascade/attention_prefill.h"
#include "kascade/engine/cuda_backend.h"
#include "kascade/engine/model.h"
#include "kascade/engine/model_path.h"
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

// A model to time, as named by a --models item.
struct BenchModel {
  std::string item;     // a known shape's key, or the model's resolved path
  bool random_weights;  // generated on the GPU; otherwise the model file's own weights
  ModelConfig config;
};

// A known shape, else a model file or directory; the error names the item and both readings.
BenchModel bench_model(const std::string& item) {
  std::string shape_error;
  try {
    return {item, true, engine::known_model_shape(item)};
  } catch (const Error& e) {
    shape_error = e.what();
  }
  KASCADE_CHECK(item == "default" || std::filesystem::exists(item),
                "--models: '" << item << "' is neither a model file or directory nor a known shape (" << shape_error
                              << ")");
  try {
    const engine::ModelSource source = engine::ModelSource::open(item);
    return {source.path(), false, source.config()};
  } catch (const Error& e) {
    KASCADE_FAIL("--models: " << e.what());
  }
}

std::shared_ptr<const engine::CudaWeights> device_weights(const BenchModel& m) {
  if (m.random_weights) return engine::random_cuda_weights(m.config, kWeightSeed);
  return engine::upload_cuda_weights(engine::ModelSource::open(m.item).load());
}

// Weight bytes a decode step reads: every matrix once, but of an untied embedding table only the
// step's rows (negligible beside the rest).
double decode_weight_bytes(const ModelConfig& c, const engine::CudaWeights& weights) {
  const double embedding_table = c.tied_embeddings ? 0.0 : 2.0 * c.vocab * c.dim;  // bf16
  return static_cast<double>(engine::cuda_weight_bytes(weights)) - embedding_table;
}

// Attention statistics summed over a batch's sequences.
engine::AttentionStats batch_stats(const engine::BatchBackend& backend) {
  engine::AttentionStats sum;
  for (int b = 0; b < backend.batch_size(); ++b) {
    const engine::AttentionStats s = backend.stats(b);
    sum.keys_read += s.keys_read;
    sum.keys_dense += s.keys_dense;
  }
  return sum;
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
    return "  --models llama-3.1-8b,smollm2-135m  known shapes (random weights) or model files / directories /\n"
           "                                   default (their own weights)\n"
           "  --plan FILE                      the Kascade runs' plan, with its own sparsity (default: layer 0 and\n"
           "                                   4 anchors evenly spaced, --rho); must fit every model\n"
           "  --contexts 8192,32768            prompt tokens per sequence\n"
           "  --batches 1,8                    sequences decoded together\n"
           "  --decode-steps 32                timed decode steps per block (two blocks with graphs, two without)\n"
           "  --prefill-chunk 2048             prefill tokens per sequence and step\n"
           "  --prefill-reps 1                 timed prefills from an empty cache (the median is recorded)\n";
  }
  bool set_option(const std::string& option, const std::string& value) override {
    if (option == "--models") {
      models_.clear();
      for (const std::string& item : split_list(option, value)) models_.push_back(bench_model(item));
    } else if (option == "--plan") {
      plan_ = load_plan(value);
      plan_path_ = value;
    } else if (option == "--contexts") {
      contexts_ = int_list(option, value);
    } else if (option == "--batches") {
      batches_ = int_list(option, value);
    } else if (option == "--decode-steps") {
      decode_steps_ = parse_positive_int(option, value);
    } else if (option == "--prefill-chunk") {
      chunk_ = parse_positive_int(option, value);
    } else if (option == "--prefill-reps") {
      prefill_reps_ = parse_positive_int(option, value);
    } else {
      return false;
    }
    return true;
  }
  int warmups() const override { return 0; }

  void measure(const CommonOptions& options, const Baselines&, ColdL2Timer&, std::mt19937_64& rng,
               json& records) override {
    // A plan that does not fit a model fails here, before any model is loaded or timed.
    for (const BenchModel& m : models_) {
      if (!plan_) continue;
      try {
        check_plan_matches(*plan_, m.config.layers, m.config.hq, m.config.hkv, m.config.head_dim);
      } catch (const Error& e) {
        KASCADE_FAIL("--plan " << plan_path_ << " does not fit model " << m.item << ": " << e.what());
      }
    }
    for (const BenchModel& m : models_) {
      const ModelConfig& config = m.config;
      const auto start = std::chrono::steady_clock::now();
      const auto weights = device_weights(m);
      const std::string origin = m.random_weights ? "generated" : "uploaded from " + m.item;
      std::printf("%s: %.2f GiB of bf16 weights %s in %.2f s\n", config.name.c_str(),
                  static_cast<double>(engine::cuda_weight_bytes(*weights)) / kGiB, origin.c_str(),
                  seconds_since(start));
      const Plan plan = plan_ ? *plan_ : schedule_plan(config, options.rho);
      for (int context : contexts_) {
        for (int batch : batches_) {
          for (const Plan* p : {static_cast<const Plan*>(nullptr), &plan}) {
            measure_one(m, weights, p, context, batch, rng, records);
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

  json base_record(const BenchModel& m, const Plan* plan, int context, int batch) const {
    const ModelConfig& c = m.config;
    json r;
    r["phase"] = "e2e";
    r["impl"] = "kascade-engine-cuda";
    r["role"] = plan ? "schedule" : "dense";
    r["model"] = c.name;
    r["weights"] = m.random_weights ? "random, seed " + std::to_string(kWeightSeed) : m.item;
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
    if (!plan) {
      r["plan"] = "";
    } else if (plan_) {
      r["plan"] = plan_path_;
    } else {
      r["plan"] = "layer 0 and " + std::to_string(kScheduleAnchorsBesidesLayer0) + " anchors evenly spaced";
    }
    r["page_size"] = 16;
    r["prefill_chunk"] = chunk_;
    return r;
  }

  void measure_one(const BenchModel& m, const std::shared_ptr<const engine::CudaWeights>& weights, const Plan* plan,
                   int context, int batch, std::mt19937_64& rng, json& records) {
    const ModelConfig& c = m.config;
    const char* attention = plan ? "kascade" : "dense";
    const int reserve = context + kWarmupDecodeSteps + kDecodeBlocks * (decode_steps_ + 1);
    size_t free_bytes = 0, total_bytes = 0;
    KASCADE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const size_t needed = step_bytes(c, batch, reserve, std::min(chunk_, context)) + kMemoryMargin;
    json base = base_record(m, plan, context, batch);
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

    // Each repetition starts from an empty cache; the last one's cache and logits go on to decode.
    std::vector<double> rep_ms;
    for (int rep = 0; rep < prefill_reps_; ++rep) {
      backend->reset();
      const auto start = std::chrono::steady_clock::now();
      logits = backend->forward(prompts);
      rep_ms.push_back(seconds_since(start) * 1e3);
    }
    std::vector<double> sorted_ms = rep_ms;
    std::sort(sorted_ms.begin(), sorted_ms.end());
    const double prefill_s = sorted_ms[sorted_ms.size() / 2] * 1e-3;
    const double prefill_keys = backend->stats(0).keys_read_fraction();

    json prefill = base;
    prefill["stage"] = "prefill";
    prefill["tokens"] = static_cast<int64_t>(batch) * context;
    prefill["reps"] = prefill_reps_;
    prefill["rep_ms"] = rep_ms;
    prefill["ms"] = prefill_s * 1e3;  // the median repetition
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
    engine::AttentionStats timed_keys[2];  // keys read in each mode's timed steps, all sequences
    for (int block = 0; block < kDecodeBlocks; ++block) {
      const bool graphs = block % 2 == 0;
      backend->set_decode_graphs(graphs);
      logits = backend->forward(greedy_next(logits));  // untimed: a graph's capture when it is the first
      if (block < 2) first_context[block] = backend->position(0);
      const int replays_before = backend->graph_replays();
      const engine::AttentionStats keys_before = batch_stats(*backend);
      const auto start = std::chrono::steady_clock::now();
      for (int s = 0; s < decode_steps_; ++s) logits = backend->forward(greedy_next(logits));
      block_s[block % 2][block / 2] = seconds_since(start);
      const engine::AttentionStats keys_after = batch_stats(*backend);
      timed_keys[block % 2].keys_read += keys_after.keys_read - keys_before.keys_read;
      timed_keys[block % 2].keys_dense += keys_after.keys_dense - keys_before.keys_dense;
      KASCADE_CHECK(!graphs || backend->graph_replays() - replays_before == decode_steps_,
                    "engine bench: " << backend->graph_replays() - replays_before << " of " << decode_steps_
                                     << " decode steps replayed a graph");
    }
    const double weight_bytes = decode_weight_bytes(c, *weights);
    const double timed_steps = static_cast<double>(kDecodeBlocks / 2) * decode_steps_;
    // keys_read counts query heads; K and V (bf16) are read once per kv head, for its whole group.
    const double kv_bytes_per_key = static_cast<double>(c.hkv) / c.hq * c.head_dim * 2 * 2;
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
      decode["keys_read_fraction"] = timed_keys[mode].keys_read_fraction();
      const double kv_bytes = timed_keys[mode].keys_read / timed_steps * kv_bytes_per_key;
      decode["weight_bytes_per_step"] = weight_bytes;
      decode["kv_bytes_per_step"] = kv_bytes;
      decode["gbps"] = (weight_bytes + kv_bytes) / (decode_s / decode_steps_) / 1e9;
      records.push_back(decode);
      std::printf("%s %-7s n=%-6d B=%d decode %s %7.3f ms/step %9.1f tokens/s %6.0f GB/s keys read %.3f "
                  "(blocks %.3f, %.3f ms/step)\n",
                  c.name.c_str(), attention, context, batch, graphs ? "graphs" : "eager ",
                  decode_s * 1e3 / decode_steps_, batch * static_cast<double>(decode_steps_) / decode_s,
                  decode["gbps"].get<double>(), timed_keys[mode].keys_read_fraction(), blocks[0].get<double>(),
                  blocks[1].get<double>());
    }
    std::fflush(stdout);
  }

  std::vector<BenchModel> models_{bench_model("llama-3.1-8b"), bench_model("smollm2-135m")};
  std::optional<Plan> plan_;  // --plan; otherwise each model's schedule plan
  std::string plan_path_;
  std::vector<int> contexts_{8192, 32768};
  std::vector<int> batches_{1, 8};
  int decode_steps_ = 32;
  int chunk_ = 2048;
  int prefill_reps_ = 1;
};

}  // namespace

std::unique_ptr<Mode> make_engine_mode() { return std::make_unique<EngineMode>(); }

}  // namespace kascade::bench
