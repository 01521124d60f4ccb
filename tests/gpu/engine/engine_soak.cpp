// engine-soak — the CUDA engine driven for thousands of steps through a seeded random schedule,
// checking that every logit stays finite, that batch slots never mix state, and that device memory
// neither grows during the run nor stays allocated after the engine is gone.
//
// Schedule (one CudaBatchBackend of --max-batch slots, reserved for --max-context tokens each):
// sequences arrive in free slots (1 .. B at once into an empty batch, later one now and then) with
// a random prompt (1 .. max-context/2 tokens, prefilled in chunks of random size up to --chunk)
// and a random number of decode steps (1 .. --max-decode), then leave. Each step every active sequence appends its next chunk or one decode token, or sits
// the step out, so the batch's size and make-up change from step to step; a step of single tokens
// only replays the decode CUDA graph of its batch size. The batch interface has no per-slot reset,
// so a slot whose sequence left stays empty until every sequence has left; then the batch is reset
// (its pages back to the pool) and the slots fill again.
//
// Variants (each its own backend and --steps steps): "dense"; "plan-rho1", the plan with rho = 1
// (its anchors, reuse layers and head map, but every key selected: the sparse paths must equal
// dense); "plan", the plan as given.
//
// Checks, any failure ends the run with one line:
//   - every logit row the batch returns is finite;
//   - every --check-every steps and at each variant's last step, one sequence that took part in the
//     step is run alone from scratch through a fresh single-sequence backend with the same
//     appends (the same chunk boundaries and decode steps): its last logits must equal the batch's
//     within engine-gpu-check's batch-vs-single bounds (top-1 where the margin exceeds 0.25 row
//     std, max |difference| 0.1 row std, centred relative L2 0.02; gated for dense and plan-rho1,
//     reported for the plan, whose selections may flip on the bf16 differences between a GEMM of
//     one row and one of several), and its keys-read count must equal the slot's;
//   - graph replays equal the steps of single tokens only, and no graph is captured after the
//     warm-up (a capture means a buffer the graphs use grew);
//   - our device memory (every DeviceBuffer, counted exactly by device_buffer_totals()): after a
//     warm-up that drives the backend to its largest buffers (every slot at --max-context, one
//     full chunk per slot in a step, a decode step at every batch size, one single-sequence
//     check) it does not change until the end of the variant, and destroying the backend, then
//     the weights, gives back every byte and block they took. Checked under the sanitizer too.
//   - device memory as the driver sees it (cudaMemGetInfo free bytes), which also holds what the
//     CUDA runtime, the driver and cuBLAS keep for the context (e.g. local-memory reservations that
//     grow the first time a kernel with a larger stack runs, and are never returned): between the
//     middle and the end of the variant it falls by at most --slack-mib (a leak keeps growing; a
//     one-time reservation does not). Its fall from the warm-up to the end and what stays held
//     after destroying the backend and the weights are reported beside our exact counts.
//     CUDA_MODULE_LOADING is set to EAGER (unless set already) so that a kernel first used late
//     does not load its module then. Under compute-sanitizer, whose own allocations would be
//     counted, --no-memory-check skips this one and leaves it to its --leak-check (the context is
//     destroyed at the end, after every engine object, so that the leak check sees what is held).
//
// Shapes: smollm2 is SmolLM2-135M's with random host weights (engine-gpu-check's, seed 42) and
// tests/data/plans/smollm2-135m.json; llama8b is Llama-3.1-8B's with weights generated on the
// device and tests/data/plans/llama3-8b-all-pooled.json.
//
//   engine-soak [--shape smollm2|llama8b] [--steps N] [--seed S] [--max-batch B] [--max-context T]
//               [--max-decode D] [--chunk C] [--check-every K] [--plan PATH]
//               [--variants dense,plan-rho1,plan] [--slack-mib M] [--no-memory-check] [--out JSON]
// Exit status 0 when every check passes, 1 when one fails, 2 on bad usage or an error.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <nlohmann/json.hpp>

#include "common/device_buffer.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/cuda_backend.h"
#include "kascade/engine/model.h"
#include "kascade/error.h"
#include "kascade/plan.h"

#include "engine_check_util.h"

namespace {

using kascade::Plan;
using kascade::cuda::device_buffer_totals;
using kascade::cuda::DeviceBufferTotals;
using kascade::engine::BackendOptions;
using kascade::engine::CudaBatchBackend;
using kascade::engine::CudaOptions;
using kascade::engine::CudaWeights;
using kascade::engine::ModelConfig;
using kascade::engine_check::RowStats;
using kascade::engine_check::to_integer;
using kascade::engine_check::to_real;
using Json = nlohmann::json;

constexpr double kMiB = 1024.0 * 1024.0;
constexpr double kArrivalChance = 0.08;  // per free slot and step
constexpr double kSitOutChance = 0.05;   // per active sequence and step
constexpr double kFullChunkChance = 0.3; // a prompt chunk of --chunk tokens (else 1..chunk)

// A check failed: the run stops with this line.
struct SoakFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};
#define SOAK_REQUIRE(cond, msg_stream)      \
  do {                                      \
    if (!(cond)) {                          \
      std::ostringstream soak_os_;          \
      soak_os_ << msg_stream;               \
      throw SoakFailure(soak_os_.str());    \
    }                                       \
  } while (0)

struct Options {
  std::string shape = "smollm2";
  int steps = 3000;  // per variant
  uint64_t seed = 1;
  int max_batch = 8;
  int max_context = 0;  // 0: 1024 for smollm2, 2048 for llama8b
  int max_decode = 128;
  int chunk = 256;
  int check_every = 256;
  std::string plan_path;  // empty: the shape's test plan
  std::vector<std::string> variants{"dense", "plan-rho1", "plan"};
  double slack_mib = 1.0;
  bool memory_check = true;
  std::string out_path;
};

const char* const kUsage =
    "usage: engine-soak [--shape smollm2|llama8b] [--steps N] [--seed S] [--max-batch B] [--max-context T]\n"
    "                   [--max-decode D] [--chunk C] [--check-every K] [--plan PATH]\n"
    "                   [--variants dense,plan-rho1,plan] [--slack-mib M] [--no-memory-check] [--out JSON]\n"
    "  --steps N        schedule steps per variant (default 3000)\n"
    "  --seed S         schedule seed (default 1)\n"
    "  --max-batch B    batch slots (default 8)\n"
    "  --max-context T  tokens per sequence at most (default 1024 smollm2, 2048 llama8b)\n"
    "  --max-decode D   decode steps per sequence at most (default 128)\n"
    "  --chunk C        prefill chunk, the largest prompt piece per step (default 256)\n"
    "  --check-every K  steps between single-sequence comparisons (default 256; also at the last step)\n"
    "  --plan PATH      plan for the plan variants (default: the shape's test plan)\n"
    "  --variants LIST  comma-separated subset of dense, plan-rho1, plan (default all three)\n"
    "  --slack-mib M    fall of free device memory allowed in a variant's second half, MiB (default 1)\n"
    "  --no-memory-check  skip the cudaMemGetInfo checks (under compute-sanitizer)\n"
    "  --out JSON       write the summary there\n"
    "exit status: 0 every check passed, 1 a check failed, 2 bad usage or an error\n";

std::vector<std::string> split_variants(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    KASCADE_CHECK(item == "dense" || item == "plan-rho1" || item == "plan",
                  "--variants: unknown variant '" << item << "' (dense, plan-rho1, plan)");
    KASCADE_CHECK(std::find(out.begin(), out.end(), item) == out.end(), "--variants: '" << item << "' twice");
    out.push_back(item);
  }
  KASCADE_CHECK(!out.empty(), "--variants: no variant given");
  return out;
}

ModelConfig shape_config(const std::string& shape) {
  if (shape == "smollm2") return kascade::engine_check::smollm2_shape();
  return kascade::engine::known_model_shape("llama-3.1-8b");
}

Options parse(int argc, char** argv, bool& help) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      KASCADE_CHECK(i + 1 < argc, a << ": missing value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      help = true;
      return o;
    } else if (a == "--shape") {
      o.shape = value();
      KASCADE_CHECK(o.shape == "smollm2" || o.shape == "llama8b",
                    "--shape: unknown shape '" << o.shape << "' (smollm2 or llama8b)");
    } else if (a == "--steps") {
      o.steps = static_cast<int>(to_integer(a, value(), 1, 10000000));
    } else if (a == "--seed") {
      o.seed = static_cast<uint64_t>(to_integer(a, value(), 0, 1LL << 62));
    } else if (a == "--max-batch") {
      o.max_batch = static_cast<int>(to_integer(a, value(), 1, 64));
    } else if (a == "--max-context") {
      o.max_context = static_cast<int>(to_integer(a, value(), 1, 1 << 20));
    } else if (a == "--max-decode") {
      o.max_decode = static_cast<int>(to_integer(a, value(), 1, 1 << 20));
    } else if (a == "--chunk") {
      o.chunk = static_cast<int>(to_integer(a, value(), 1, 1 << 16));
    } else if (a == "--check-every") {
      o.check_every = static_cast<int>(to_integer(a, value(), 1, 10000000));
    } else if (a == "--plan") {
      o.plan_path = value();
    } else if (a == "--variants") {
      o.variants = split_variants(value());
    } else if (a == "--slack-mib") {
      o.slack_mib = to_real(a, value(), 0, 1 << 20);
    } else if (a == "--no-memory-check") {
      o.memory_check = false;
    } else if (a == "--out") {
      o.out_path = value();
    } else {
      KASCADE_FAIL("unknown option '" << a << "' (--help lists them)");
    }
  }
  const ModelConfig config = shape_config(o.shape);
  if (o.max_context == 0) o.max_context = std::min(o.shape == "smollm2" ? 1024 : 2048, config.context);
  // The warm-up prefills every slot to max-context - max-batch tokens before its decode steps.
  KASCADE_CHECK(o.max_context >= 2 * o.max_batch + 2 && o.max_context >= 8,
                "--max-context " << o.max_context << ": must be at least 8 and 2 * max-batch + 2 ("
                                 << 2 * o.max_batch + 2 << ")");
  KASCADE_CHECK(o.max_context <= config.context,
                "--max-context " << o.max_context << ": beyond the model's context of " << config.context);
  if (o.plan_path.empty()) {
    o.plan_path = o.shape == "smollm2" ? "tests/data/plans/smollm2-135m.json"
                                       : "tests/data/plans/llama3-8b-all-pooled.json";
  }
  return o;
}

// ---- device memory ----------------------------------------------------------------------------
void cuda_check(cudaError_t status, const char* what) {
  KASCADE_CHECK(status == cudaSuccess, what << " failed: " << cudaGetErrorString(status));
}

size_t free_device_bytes() {
  cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  size_t free_bytes = 0, total = 0;
  cuda_check(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo");
  return free_bytes;
}

double mib(double bytes) { return bytes / kMiB; }

Json totals_json(const DeviceBufferTotals& t) { return Json{{"bytes", t.bytes}, {"blocks", t.blocks}}; }

std::string totals_str(const DeviceBufferTotals& t) {
  std::ostringstream os;
  os << t.bytes << " bytes in " << t.blocks << " blocks";
  return os.str();
}

// ---- the schedule -------------------------------------------------------------------------------
struct Sequence {
  int id = 0;
  std::vector<int32_t> tokens;  // every token appended so far
  std::vector<int> appends;     // how many tokens each step appended, in order
  int prompt = 0;               // prompt length
  int decode_target = 0;        // decode steps before it leaves
  int decoded = 0;
  int prefilled() const { return static_cast<int>(tokens.size()) - decoded; }
};

enum class SlotState { Free, Active, Left };

struct VariantReport {
  std::string name;
  bool gated = true;  // logits compared with the bounds (else reported)
  long long steps = 0, tokens = 0, prefill_tokens = 0, decode_tokens = 0, single_token_steps = 0, chunk_steps = 0;
  long long sequences_started = 0, sequences_finished = 0, batch_resets = 0, idle_steps = 0;
  std::map<int, long long> batch_sizes;  // participants -> steps
  int graphs_after_warmup = 0, graphs_at_end = 0;
  long long graph_replays = 0;
  Json checks = Json::array();
  RowStats all_checks;  // every comparison's rows
  double worst_reported_diff_sigmas = 0, worst_reported_rel_l2 = 0;
  size_t free_before_backend = 0, free_after_warmup = 0, free_mid = 0, free_at_end = 0, free_after_destroy = 0;
  DeviceBufferTotals ours_before_backend, ours_after_warmup, ours_at_end, ours_after_destroy;
  double seconds_warmup = 0, seconds_soak = 0;
  std::string failure;

  Json to_json(bool memory_check) const {
    Json sizes = Json::object();
    for (const auto& [size, count] : batch_sizes) sizes[std::to_string(size)] = count;
    Json j{{"variant", name},
           {"logits_gated", gated},
           {"steps", steps},
           {"tokens", tokens},
           {"prefill_tokens", prefill_tokens},
           {"decode_tokens", decode_tokens},
           {"single_token_steps", single_token_steps},
           {"steps_with_prompt_chunks", chunk_steps},
           {"idle_steps", idle_steps},
           {"sequences_started", sequences_started},
           {"sequences_finished", sequences_finished},
           {"batch_resets", batch_resets},
           {"batch_sizes_seen", sizes},
           {"graph_replays", graph_replays},
           {"graphs_captured_warmup", graphs_after_warmup},
           {"graphs_captured_end", graphs_at_end},
           {"checks_passed", static_cast<long long>(std::count_if(checks.begin(), checks.end(),
                                                                   [](const Json& c) { return c["passed"] == true; }))},
           {"checks", checks},
           {"compared_rows", all_checks.to_json()},
           {"seconds_warmup", seconds_warmup},
           {"seconds_soak", seconds_soak},
           {"passed", failure.empty()}};
    j["our_buffers"] = {{"before_backend", totals_json(ours_before_backend)},
                        {"after_warmup", totals_json(ours_after_warmup)},
                        {"at_end", totals_json(ours_at_end)},
                        {"after_destroy", totals_json(ours_after_destroy)}};
    if (memory_check) {
      j["memory_mib"] = {{"free_before_backend", mib(free_before_backend)},
                         {"free_after_warmup", mib(free_after_warmup)},
                         {"free_mid", mib(free_mid)},
                         {"free_at_end", mib(free_at_end)},
                         {"free_after_destroy", mib(free_after_destroy)},
                         {"growth", mib(static_cast<double>(free_after_warmup) - free_at_end)},
                         {"growth_second_half", mib(static_cast<double>(free_mid) - free_at_end)},
                         {"held_after_destroy", mib(static_cast<double>(free_before_backend) - free_after_destroy)}};
    }
    if (!failure.empty()) j["failure"] = failure;
    return j;
  }
};

class Soak {
 public:
  Soak(const Options& o, std::shared_ptr<const CudaWeights> weights, const ModelConfig& config, const Plan* plan,
       VariantReport& report)
      : o_(o), weights_(std::move(weights)), c_(config), plan_(plan), r_(report), rng_(o.seed) {
    bo_.prefill_chunk = o.chunk;
    co_.reserve_tokens = o.max_context;
  }

  void run() {
    if (o_.memory_check) r_.free_before_backend = free_device_bytes();
    r_.ours_before_backend = device_buffer_totals();
    {
      const auto start = std::chrono::steady_clock::now();
      batch_ = kascade::engine::make_cuda_batch_backend(weights_, plan_, o_.max_batch, bo_, co_);
      try {
        warm_up();
        r_.seconds_warmup = seconds_since(start);
        r_.graphs_after_warmup = batch_->graphs_captured();
        replays_before_ = batch_->graph_replays();
        if (o_.memory_check) r_.free_after_warmup = free_device_bytes();
        r_.ours_after_warmup = device_buffer_totals();
        const auto soak_start = std::chrono::steady_clock::now();
        soak();
        r_.seconds_soak = seconds_since(soak_start);
      } catch (const SoakFailure& f) {
        r_.failure = f.what();
      }
      r_.graphs_at_end = batch_->graphs_captured();
      r_.graph_replays = batch_->graph_replays() - replays_before_;
      if (o_.memory_check) r_.free_at_end = free_device_bytes();
      r_.ours_at_end = device_buffer_totals();
      if (r_.failure.empty()) r_.failure = end_of_run_failure();
      batch_.reset();
    }
    if (o_.memory_check) r_.free_after_destroy = free_device_bytes();
    r_.ours_after_destroy = device_buffer_totals();
    if (r_.failure.empty() && r_.ours_after_destroy != r_.ours_before_backend) {
      r_.failure = "the batch backend's buffers were not all freed: " + totals_str(r_.ours_after_destroy) +
                   " after it was destroyed, " + totals_str(r_.ours_before_backend) + " before it was made";
    }
  }

 private:
  static double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  }

  int32_t random_token() { return std::uniform_int_distribution<int32_t>(0, c_.vocab - 1)(rng_); }
  std::vector<int32_t> random_tokens(int n) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int32_t& t : ids) t = random_token();
    return ids;
  }
  double uniform() { return std::uniform_real_distribution<double>(0, 1)(rng_); }
  int uniform_int(int low, int high) { return std::uniform_int_distribution<int>(low, high)(rng_); }

  void require_finite(const std::vector<float>& row, const std::string& what) {
    SOAK_REQUIRE(row.size() == static_cast<size_t>(c_.vocab),
                 what << ": " << row.size() << " logits, expected " << c_.vocab);
    for (size_t i = 0; i < row.size(); ++i) {
      SOAK_REQUIRE(std::isfinite(row[i]), what << ": logit " << i << " is " << row[i]);
    }
  }

  // Drives the backend to its largest buffers, so that the soak allocates nothing: every slot
  // prefilled to max-context in full chunks (the most rows a step has, the longest keys), then
  // after a reset every slot to max-context - B and one decode step at each batch size B .. 1
  // (every graph captured), and one single-sequence comparison (a fresh backend's first-use costs).
  void warm_up() {
    const int slots = o_.max_batch, full = o_.max_context, shorter = o_.max_context - o_.max_batch;
    std::vector<std::vector<int32_t>> tokens(static_cast<size_t>(slots));
    for (auto& t : tokens) t = random_tokens(full);
    for (const auto& row : batch_->forward(tokens)) require_finite(row, "warm-up prefill");
    batch_->reset();
    for (auto& t : tokens) t = random_tokens(shorter);
    for (const auto& row : batch_->forward(tokens)) require_finite(row, "warm-up prefill");
    for (int size = slots; size >= 1; --size) {
      for (int b = 0; b < slots; ++b) tokens[static_cast<size_t>(b)] = b < size ? std::vector<int32_t>{random_token()}
                                                                                 : std::vector<int32_t>{};
      const auto rows = batch_->forward(tokens);
      for (int b = 0; b < size; ++b) require_finite(rows[static_cast<size_t>(b)], "warm-up decode");
    }
    batch_->reset();
    Sequence probe;
    probe.tokens = random_tokens(std::min(o_.chunk, o_.max_context - 1) + 1);
    probe.appends = {static_cast<int>(probe.tokens.size()) - 1, 1};
    std::vector<float> ignored = run_alone(probe, nullptr);
    require_finite(ignored, "warm-up single-sequence run");
  }

  // The sequence's appends replayed through a fresh single-sequence backend; returns the last
  // logits and (when keys is non-null) the keys its attention read.
  std::vector<float> run_alone(const Sequence& s, kascade::engine::AttentionStats* keys) {
    auto single = kascade::engine::make_cuda_backend(weights_, plan_, bo_, co_);
    std::vector<float> logits;
    size_t done = 0;
    for (int count : s.appends) {
      const std::vector<int32_t> part(s.tokens.begin() + static_cast<std::ptrdiff_t>(done),
                                      s.tokens.begin() + static_cast<std::ptrdiff_t>(done + count));
      logits = single->forward(part, false);
      done += static_cast<size_t>(count);
    }
    if (keys) *keys = single->stats();
    return logits;
  }

  void start_sequence(int slot) {
    Sequence s;
    s.id = next_id_++;
    s.prompt = uniform_int(1, o_.max_context / 2);
    s.decode_target = uniform_int(1, std::min(o_.max_decode, o_.max_context - s.prompt));
    seqs_[static_cast<size_t>(slot)] = std::move(s);
    state_[static_cast<size_t>(slot)] = SlotState::Active;
    ++r_.sequences_started;
  }

  // The tokens an active sequence appends this step: its next prompt chunk or one decode token.
  std::vector<int32_t> next_tokens(const Sequence& s) {
    const int left = s.prompt - s.prefilled();
    if (left > 0) {
      const int piece = uniform() < kFullChunkChance ? o_.chunk : uniform_int(1, o_.chunk);
      return random_tokens(std::min(left, piece));
    }
    return {random_token()};
  }

  void soak() {
    const int slots = o_.max_batch;
    seqs_.assign(static_cast<size_t>(slots), Sequence{});
    state_.assign(static_cast<size_t>(slots), SlotState::Free);
    bool check_due = false;
    for (long long step = 0; step < o_.steps; ++step) {
      step_ = step;
      if (o_.memory_check && step == o_.steps / 2) r_.free_mid = free_device_bytes();
      // A comparison every check_every steps and at the last one (on the next step with tokens
      // when every sequence sits that one out).
      if ((step + 1) % o_.check_every == 0 || step + 1 == o_.steps) check_due = true;
      // Departures: a sequence leaves after its decode steps; its slot stays empty until a reset.
      int active = 0;
      for (int b = 0; b < slots; ++b) {
        Sequence& s = seqs_[static_cast<size_t>(b)];
        if (state_[static_cast<size_t>(b)] != SlotState::Active) continue;
        if (s.prefilled() >= s.prompt && s.decoded >= s.decode_target) {
          state_[static_cast<size_t>(b)] = SlotState::Left;
          ++r_.sequences_finished;
        } else {
          ++active;
        }
      }
      if (active == 0 && std::count(state_.begin(), state_.end(), SlotState::Left) > 0) {
        batch_->reset();
        std::fill(state_.begin(), state_.end(), SlotState::Free);
        ++r_.batch_resets;
      }
      // Arrivals: into an empty batch, 1 .. B sequences at once in random slots; later, one now and
      // then into a slot not used since the reset.
      if (active == 0) {
        std::vector<int> order(static_cast<size_t>(slots));
        std::iota(order.begin(), order.end(), 0);
        std::shuffle(order.begin(), order.end(), rng_);
        active = uniform_int(1, slots);
        for (int i = 0; i < active; ++i) start_sequence(order[static_cast<size_t>(i)]);
      } else {
        for (int b = 0; b < slots; ++b) {
          if (state_[static_cast<size_t>(b)] == SlotState::Free && uniform() < kArrivalChance) start_sequence(b);
        }
      }
      // This step's tokens: every active sequence but those sitting it out (never all of them).
      std::vector<std::vector<int32_t>> tokens(static_cast<size_t>(slots));
      std::vector<int> participants;
      for (int b = 0; b < slots; ++b) {
        if (state_[static_cast<size_t>(b)] != SlotState::Active || uniform() < kSitOutChance) continue;
        tokens[static_cast<size_t>(b)] = next_tokens(seqs_[static_cast<size_t>(b)]);
        participants.push_back(b);
      }
      if (participants.empty()) {
        ++r_.idle_steps;
        continue;
      }
      const std::vector<std::vector<float>> logits = batch_->forward(tokens);
      bool single_tokens = true;
      for (int b : participants) {
        Sequence& s = seqs_[static_cast<size_t>(b)];
        const std::vector<int32_t>& t = tokens[static_cast<size_t>(b)];
        const bool decode = s.prefilled() >= s.prompt;
        single_tokens = single_tokens && t.size() == 1;
        s.tokens.insert(s.tokens.end(), t.begin(), t.end());
        s.appends.push_back(static_cast<int>(t.size()));
        (decode ? r_.decode_tokens : r_.prefill_tokens) += static_cast<long long>(t.size());
        if (decode) ++s.decoded;
        r_.tokens += static_cast<long long>(t.size());
        std::ostringstream what;
        what << "step " << step << ", slot " << b << " (sequence " << s.id << ", " << s.tokens.size() << " tokens)";
        require_finite(logits[static_cast<size_t>(b)], what.str());
        SOAK_REQUIRE(batch_->position(b) == static_cast<int>(s.tokens.size()),
                     what.str() << ": the backend holds " << batch_->position(b) << " tokens");
      }
      ++r_.steps;
      ++r_.batch_sizes[static_cast<int>(participants.size())];
      (single_tokens ? r_.single_token_steps : r_.chunk_steps) += 1;
      if (check_due) {
        check_due = false;
        const int b = participants[static_cast<size_t>(uniform_int(0, static_cast<int>(participants.size()) - 1))];
        compare_alone(b, logits[static_cast<size_t>(b)]);
      }
    }
  }

  // Slot b's sequence run alone against the batch's logits of this step.
  void compare_alone(int b, const std::vector<float>& batch_logits) {
    const Sequence& s = seqs_[static_cast<size_t>(b)];
    kascade::engine::AttentionStats alone_keys;
    const std::vector<float> alone = run_alone(s, &alone_keys);
    const kascade::engine::AttentionStats batch_keys = batch_->stats(b);
    RowStats row;
    row.add(alone.data(), batch_logits.data(), c_.vocab, kascade::engine_check::kBatchVsSingle);
    r_.all_checks.add(alone.data(), batch_logits.data(), c_.vocab, kascade::engine_check::kBatchVsSingle);
    // The same budget arithmetic over the same appends (engine-gpu-check's bound).
    auto same = [](double x, double y) { return std::fabs(x - y) <= 1e-9 * std::max(1.0, std::fabs(x)); };
    const bool keys_equal = same(alone_keys.keys_read, batch_keys.keys_read) &&
                            same(alone_keys.keys_dense, batch_keys.keys_dense);
    const bool logits_ok = row.passed();
    const bool passed = keys_equal && (logits_ok || !r_.gated);
    const int top1_mismatch = row.top1_mismatches;
    r_.checks.push_back(Json{{"step", step_},
                             {"slot", b},
                             {"sequence", s.id},
                             {"tokens", s.tokens.size()},
                             {"appends", s.appends.size()},
                             {"max_diff_over_row_std", row.max_diff_sigmas},
                             {"rel_l2", row.max_rel_l2},
                             {"top1_compared", row.compared_top1},
                             {"top1_mismatch", top1_mismatch},
                             {"keys_read_batch", batch_keys.keys_read},
                             {"keys_read_alone", alone_keys.keys_read},
                             {"logits_within_bounds", logits_ok},
                             {"passed", passed}});
    if (!r_.gated) {
      r_.worst_reported_diff_sigmas = std::max(r_.worst_reported_diff_sigmas, row.max_diff_sigmas);
      r_.worst_reported_rel_l2 = std::max(r_.worst_reported_rel_l2, row.max_rel_l2);
    }
    std::printf("%-9s step %6lld: batch sizes %d..%d, %lld graph replays | slot %d (%zu tokens, %zu appends) alone: "
                "max|diff| %.2e row std, rel L2 %.2e, top1 %s, keys %s  %s\n",
                r_.name.c_str(), step_ + 1, r_.batch_sizes.begin()->first, r_.batch_sizes.rbegin()->first,
                static_cast<long long>(batch_->graph_replays() - replays_before_), b, s.tokens.size(), s.appends.size(), row.max_diff_sigmas,
                row.max_rel_l2, row.compared_top1 == 0 ? "near-tie" : top1_mismatch ? "DIFFERS" : "equal",
                keys_equal ? "equal" : "DIFFER", passed ? (r_.gated ? "PASS" : "reported") : "FAIL");
    std::fflush(stdout);
    std::ostringstream what;
    what << "step " << step_ << ", slot " << b << " (sequence " << s.id << ", " << s.tokens.size()
         << " tokens) against the same appends run alone: ";
    SOAK_REQUIRE(keys_equal, what.str() << "keys read " << batch_keys.keys_read << " in the batch, "
                                        << alone_keys.keys_read << " alone");
    SOAK_REQUIRE(logits_ok || !r_.gated,
                 what.str() << "max |difference| " << row.max_diff_sigmas << " row std (bound "
                            << kascade::engine_check::kBatchVsSingle.max_diff_sigmas << "), relative L2 "
                            << row.max_rel_l2 << " (bound " << kascade::engine_check::kBatchVsSingle.max_rel_l2
                            << "), top-1 " << (top1_mismatch ? "differs" : "agrees"));
  }

  // Checks that need the whole run: graphs and device memory.
  std::string end_of_run_failure() const {
    std::ostringstream os;
    if (r_.graph_replays != r_.single_token_steps) {
      os << r_.graph_replays << " decode graph replays for " << r_.single_token_steps << " steps of single tokens";
    } else if (r_.graphs_at_end != r_.graphs_after_warmup) {
      os << r_.graphs_at_end - r_.graphs_after_warmup
         << " decode graphs captured after the warm-up (a buffer the graphs use grew)";
    } else if (r_.ours_at_end != r_.ours_after_warmup) {
      os << "our device buffers changed after the warm-up: " << totals_str(r_.ours_after_warmup) << " after it, "
         << totals_str(r_.ours_at_end) << " at the end";
    } else if (o_.memory_check) {
      const double growth = static_cast<double>(r_.free_mid) - static_cast<double>(r_.free_at_end);
      if (growth > o_.slack_mib * kMiB) {
        os << "free device memory fell by " << mib(growth) << " MiB between step " << o_.steps / 2
           << " and the end of " << r_.steps << " steps (slack " << o_.slack_mib << " MiB)";
      }
    }
    return os.str();
  }

  const Options& o_;
  std::shared_ptr<const CudaWeights> weights_;
  const ModelConfig& c_;
  const Plan* plan_;
  VariantReport& r_;
  std::mt19937_64 rng_;
  BackendOptions bo_;
  CudaOptions co_;
  std::unique_ptr<CudaBatchBackend> batch_;
  std::vector<Sequence> seqs_;
  std::vector<SlotState> state_;
  int next_id_ = 0;
  long long step_ = 0;
  int replays_before_ = 0;
};

// A one-layer model through the engine once, before any measurement: the CUDA context, cuBLAS and
// the first stream's one-time allocations are then in place and not counted as the engine's.
void prime_runtime() {
  ModelConfig tiny;
  tiny.name = "engine-soak-primer";
  tiny.layers = 1;
  tiny.dim = 128;
  tiny.ffn = 256;
  tiny.hq = 2;
  tiny.hkv = 1;
  tiny.head_dim = 64;
  tiny.vocab = 256;
  tiny.context = 256;
  BackendOptions bo;
  bo.prefill_chunk = 64;
  auto backend = kascade::engine::make_cuda_backend(kascade::engine::random_cuda_weights(tiny, 1), nullptr, bo);
  backend->forward(std::vector<int32_t>(100, 3), false);
  backend->forward({7}, false);
}

void write_json(const std::string& path, const Json& j) {
  std::ofstream f(path);
  KASCADE_CHECK(f, "--out " << path << ": cannot write the file");
  f << j.dump(2) << "\n";
  KASCADE_CHECK(f.good(), "--out " << path << ": writing failed");
}

int run(const Options& o) {
  const ModelConfig config = shape_config(o.shape);
  Plan plan = kascade::load_plan(o.plan_path);
  try {
    kascade::check_plan_matches(plan, config.layers, config.hq, config.hkv, config.head_dim);
  } catch (const kascade::Error& e) {
    KASCADE_FAIL("--plan " << o.plan_path << " does not fit the " << o.shape << " shape: " << e.what());
  }
  Plan full = plan;  // rho = 1: every key selected, the sparse paths must equal dense
  full.sparsity.rho = 1.0;
  if (!o.out_path.empty()) write_json(o.out_path, Json{{"passed", false}, {"note", "run in progress"}});

  int devices = 0;
  const cudaError_t probe = cudaGetDeviceCount(&devices);
  KASCADE_CHECK(probe == cudaSuccess && devices > 0, "no CUDA device: " << cudaGetErrorString(probe));
  cudaDeviceProp prop{};
  cuda_check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("device: %s; shape %s, %d steps per variant, seed %llu, batch <= %d, context <= %d, chunk %d\n",
              prop.name, o.shape.c_str(), o.steps, static_cast<unsigned long long>(o.seed), o.max_batch,
              o.max_context, o.chunk);
  std::fflush(stdout);

  prime_runtime();
  const size_t free_before_weights = o.memory_check ? free_device_bytes() : 0;
  const DeviceBufferTotals ours_before_weights = device_buffer_totals();
  std::shared_ptr<const CudaWeights> weights =
      o.shape == "smollm2" ? kascade::engine::upload_cuda_weights(kascade::engine_check::random_model(
                                 config, 42, kascade::engine_check::kFlatGain))
                           : kascade::engine::random_cuda_weights(config, 42);
  const size_t weight_bytes = kascade::engine::cuda_weight_bytes(*weights);

  std::vector<VariantReport> reports;
  std::string failure;
  for (const std::string& variant : o.variants) {
    VariantReport& r = reports.emplace_back();
    r.name = variant;
    r.gated = variant != "plan";
    const Plan* p = variant == "dense" ? nullptr : variant == "plan-rho1" ? &full : &plan;
    Soak(o, weights, config, p, r).run();
    std::printf("%-9s %s: %lld steps, %lld tokens, batch sizes %d..%d, %lld graph replays, %zu checks%s",
                variant.c_str(), r.failure.empty() ? "PASS" : "FAIL", r.steps, r.tokens,
                r.batch_sizes.empty() ? 0 : r.batch_sizes.begin()->first,
                r.batch_sizes.empty() ? 0 : r.batch_sizes.rbegin()->first, r.graph_replays, r.checks.size(),
                o.memory_check ? "" : "\n");
    if (o.memory_check) {
      std::printf(", free memory %.1f -> %.1f MiB (after warm-up -> end), %.1f MiB held after destroy\n",
                  mib(r.free_after_warmup), mib(r.free_at_end),
                  mib(static_cast<double>(r.free_before_backend) - static_cast<double>(r.free_after_destroy)));
    }
    std::fflush(stdout);
    if (!r.failure.empty()) {
      failure = variant + ": " + r.failure;
      break;
    }
  }
  weights.reset();
  const size_t free_after_weights = o.memory_check ? free_device_bytes() : 0;
  const DeviceBufferTotals ours_after_weights = device_buffer_totals();
  if (failure.empty() && ours_after_weights != ours_before_weights) {
    failure = "our device buffers were not all freed with the weights: " + totals_str(ours_after_weights) +
              " after, " + totals_str(ours_before_weights) + " before they were made";
  }
  if (o.memory_check) {
    std::printf("our buffers: %s before the weights, %s after they were released; free device memory %.1f -> "
                "%.1f MiB (the context's own reservations stay until it ends)\n",
                totals_str(ours_before_weights).c_str(), totals_str(ours_after_weights).c_str(),
                mib(free_before_weights), mib(free_after_weights));
  }

  Json variants = Json::array();
  for (const VariantReport& r : reports) variants.push_back(r.to_json(o.memory_check));
  Json summary{{"device", prop.name},
               {"shape", o.shape},
               {"model", config.name},
               {"plan", o.plan_path},
               {"seed", o.seed},
               {"steps_per_variant", o.steps},
               {"max_batch", o.max_batch},
               {"max_context", o.max_context},
               {"max_decode", o.max_decode},
               {"chunk", o.chunk},
               {"check_every", o.check_every},
               {"bounds", {{"max_diff_over_row_std", kascade::engine_check::kBatchVsSingle.max_diff_sigmas},
                           {"max_rel_l2", kascade::engine_check::kBatchVsSingle.max_rel_l2},
                           {"top1_margin_over_row_std", kascade::engine_check::kMarginSigmas}}},
               {"memory_checked", o.memory_check},
               {"slack_mib", o.slack_mib},
               {"cuda_module_loading", std::getenv("CUDA_MODULE_LOADING") ? std::getenv("CUDA_MODULE_LOADING") : ""},
               {"weight_mib", mib(static_cast<double>(weight_bytes))},
               {"variants", variants},
               {"passed", failure.empty()}};
  if (o.memory_check) {
    summary["memory_mib"] = {{"free_before_weights", mib(free_before_weights)},
                             {"free_after_weights_released", mib(free_after_weights)}};
  }
  summary["our_buffers"] = {{"before_weights", totals_json(ours_before_weights)},
                            {"after_weights_released", totals_json(ours_after_weights)}};
  if (!failure.empty()) summary["failure"] = failure;
  if (!o.out_path.empty()) write_json(o.out_path, summary);
  // Every engine object is gone: destroying the context now lets compute-sanitizer's leak check
  // see any allocation still held.
  cuda_check(cudaDeviceReset(), "cudaDeviceReset");
  if (!failure.empty()) {
    std::fprintf(stderr, "engine-soak: FAIL %s\n", failure.c_str());
    return 1;
  }
  std::printf("all checks passed\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    bool help = false;
    const Options o = parse(argc, argv, help);
    if (help) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    // Every module loaded when the context is made: a kernel first used late in the run (a cuBLAS
    // GEMM for a new row count) would otherwise load its module then and count as growth. Not
    // under the sanitizer (no memory check there): it would instrument every cuBLAS module.
    if (o.memory_check) setenv("CUDA_MODULE_LOADING", "EAGER", 0);
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "engine-soak: %s\n", e.what());
    return 2;
  }
}
