// `kascade demo`: the main job. On the default model (SmolLM2-135M-Instruct), build a long
// prompt with a fact hidden in it, answer it with dense attention and with Kascade (the plan
// shipped for the model), and show both answers, whether they agree, the time of each and the
// fraction of keys attention read. Uses the GPU when this build has the CUDA backend and a GPU
// is present (and says so when it falls back to the CPU).
//
//   kascade demo                         # passkey at 2048 tokens, default model and plan
//   kascade demo --length 4096 --task niah-single --backend cpu
//   kascade demo --synthetic             # no model: a synthetic layer stack (demo_synthetic.cpp)
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "command.h"
#include "demo.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/generate.h"
#include "kascade/engine/model.h"
#include "kascade/engine/model_path.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"
#include "kascade/eval/tasks.h"
#include "kascade/plan.h"

namespace kascade::cli {
namespace {

struct ModelDemoOptions {
  std::string model = "default";
  std::string plan = "default";
  std::string task = "passkey";
  int length = 2048;
  int index = 0;
  uint64_t seed = 7;
  std::string backend = "auto";
  int threads = 0;
  std::optional<DType> kv_cache;
};

ModelDemoOptions parse_model_demo_options(const Args& args) {
  ModelDemoOptions o;
  OptionReader r(args);
  std::string v;
  while (!r.done()) {
    if (r.take_value("--model", v)) o.model = v;
    else if (r.take_value("--plan", v)) o.plan = v;
    else if (r.take_value("--task", v)) o.task = v;
    else if (r.take_value("--length", v)) o.length = parse_int(v, "--length");
    else if (r.take_value("--example", v)) o.index = parse_int(v, "--example");
    else if (r.take_value("--seed", v)) o.seed = static_cast<uint64_t>(parse_int(v, "--seed"));
    else if (r.take_value("--backend", v)) o.backend = v;
    else if (r.take_value("--threads", v)) o.threads = parse_int(v, "--threads");
    else if (take_kv_cache(r, o.kv_cache)) continue;
    else KASCADE_FAIL("unknown option '" << r.peek() << "' (demo takes --model, --plan, --task, --length, --example, "
                                         "--seed, --backend, --threads, --kv-cache, or --synthetic)");
  }
  KASCADE_CHECK(o.length >= 256 && o.length <= 8192, "--length: expected 256..8192 tokens, got " << o.length);
  KASCADE_CHECK(o.index >= 0, "--example must be >= 0, got " << o.index);
  KASCADE_CHECK(o.threads >= 0, "--threads must be >= 0, got " << o.threads);
  KASCADE_CHECK(o.backend == "auto" || o.backend == "cpu" || o.backend == "cuda",
                "--backend must be auto, cpu or cuda, got '" << o.backend << "'");
  bool known_task = false;
  for (const std::string& t : eval::task_names()) known_task |= t == o.task;
  KASCADE_CHECK(known_task, "--task: unknown task '" << o.task << "'");
  return o;
}

struct RunResult {
  engine::GenerateResult gen;
  bool correct = false;
};

RunResult answer(engine::Backend& be, const engine::Tokenizer& tok, const eval::Example& ex) {
  std::vector<int32_t> prompt = ex.context;
  prompt.insert(prompt.end(), ex.query.begin(), ex.query.end());
  engine::GenerateOptions gopt;
  gopt.max_tokens = static_cast<int>(ex.answer.size()) + 4;
  RunResult r;
  r.gen = engine::generate(be, tok, prompt, gopt);
  // Exact match: the answer's tokens come first (the task tokenizes values on their own).
  r.correct = r.gen.tokens.size() >= ex.answer.size() &&
              std::equal(ex.answer.begin(), ex.answer.end(), r.gen.tokens.begin());
  return r;
}

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

engine::BackendOptions backend_options(const ModelDemoOptions& o) {
  engine::BackendOptions bopt;
  bopt.threads = o.threads;
  if (o.kv_cache) bopt.cpu_kv_cache = *o.kv_cache;
  return bopt;
}

// The backend of the dense run: cuda when asked, or when auto and a GPU backend can be made
// (the probe itself is that backend, so the weights are loaded once for it).
std::unique_ptr<engine::Backend> make_dense_backend(const ModelDemoOptions& o, const engine::Model& model) {
  if (o.backend != "auto") return engine::make_backend(o.backend, model, nullptr, backend_options(o));
  try {
    return engine::make_backend("cuda", model, nullptr, backend_options(o));
  } catch (const Error& e) {
    std::printf("(no GPU backend here: %s; running on the CPU)\n", e.what());
    return engine::make_backend("cpu", model, nullptr, backend_options(o));
  }
}

int run_model_demo(const Args& args) {
  const ModelDemoOptions o = parse_model_demo_options(args);
  const std::string plan_path = o.plan == "default" ? engine::default_plan_path() : o.plan;
  const Plan plan = load_plan(plan_path);
  const engine::ModelSource source = engine::ModelSource::open(o.model);
  const engine::Tokenizer tok = source.tokenizer();
  // The CPU reads the weights in their file's block types; the GPU backend takes fp32.
  bool cuda_built = true;
  try {
    engine::check_backend_available("cuda");
  } catch (const Error&) {
    cuda_built = false;
  }
  const bool cpu_only = o.backend == "cpu" || (o.backend == "auto" && !cuda_built);
  const engine::Model model = source.load(cpu_only ? engine::WeightStorage::Quantized : engine::WeightStorage::Fp32);
  check_plan_matches(plan, model.config.layers, model.config.hq, model.config.hkv, model.config.head_dim);
  eval::TaskTokenizer tt{[&](const std::string& s) { return tok.encode_continuation(s); },
                         tok.add_bos() ? tok.bos_id() : -1};
  const eval::Example ex = eval::make_example(o.task, o.length, o.index, o.seed, tt);
  std::unique_ptr<engine::Backend> dense_backend = make_dense_backend(o, model);
  const std::string backend = dense_backend->name();
  check_kv_cache_backend(o.kv_cache, backend);

  const std::string cache =
      backend == "cpu" ? std::string(" (") + dtype_name(backend_options(o).cpu_kv_cache) + " KV cache)" : "";
  std::printf("kascade demo: %s, %d layers, %d/%d heads; backend %s%s\n", model.config.name.c_str(),
              model.config.layers, model.config.hq, model.config.hkv, backend.c_str(), cache.c_str());
  std::printf("plan: %s (anchors", plan_path.c_str());
  for (int a : plan.anchors) std::printf(" %d", a);
  std::printf("; rho %.2f, k_min %d)\n", plan.sparsity.rho, plan.sparsity.k_min);
  std::printf("prompt: task %s, %d tokens; the hidden answer is \"%s\"\n", o.task.c_str(), o.length,
              one_line(ex.answer_text).c_str());
  std::printf("question: ...%s\n\n", one_line(tok.decode(ex.query)).c_str());
  std::fflush(stdout);

  const RunResult dense = answer(*dense_backend, tok, ex);
  dense_backend.reset();  // free its cache (and GPU memory) before the Kascade run
  const std::unique_ptr<engine::Backend> sparse_backend =
      engine::make_backend(backend, model, &plan, backend_options(o));
  const RunResult sparse = answer(*sparse_backend, tok, ex);
  std::printf("%-8s  %-28s  %-7s  %9s  %11s  %9s\n", "", "answer", "correct", "prefill s", "decode tok/s",
              "keys read");
  const struct {
    const char* name;
    const RunResult& r;
  } rows[] = {{"dense", dense}, {"kascade", sparse}};
  for (const auto& row : rows) {
    std::string text = "\"" + one_line(row.r.gen.text) + "\"";
    std::printf("%-8s  %-28s  %-7s  %9.2f  %11.1f  %8.1f%%\n", row.name, text.c_str(), row.r.correct ? "yes" : "no",
                row.r.gen.prefill_seconds, row.r.gen.decode_tokens_per_second(),
                100.0 * row.r.gen.keys_read_fraction);
  }
  // Agreement over the answer span (the runs may go on differently after it).
  size_t same = 0;
  while (same < dense.gen.tokens.size() && same < sparse.gen.tokens.size() &&
         dense.gen.tokens[same] == sparse.gen.tokens[same])
    ++same;
  const bool agree = same >= ex.answer.size();
  std::printf("\nagreement: %s (%zu leading tokens identical)\n",
              agree ? "same answer from dense and Kascade" : "the answers differ", same);
  if (backend == "cpu")
    std::printf("note: on the CPU, attention is fp32 over the cache (docs/engine.md); the GPU kernels' speed-ups are "
                "in docs/benchmarks.md\n");
  return 0;
}

int run_demo(const Args& args) {
  if (!args.empty() && args[0] == "--synthetic") return run_synthetic_demo(Args(args.begin() + 1, args.end()));
  return run_model_demo(args);
}

const Command kDemo("demo", "dense vs Kascade on the default model: a hidden fact in a long prompt (--synthetic: no model)",
                    run_demo);

}  // namespace
}  // namespace kascade::cli
