// `kascade generate`: load a GGUF model, run a prompt through it (dense or with a Kascade plan)
// and stream the generated text; report prefill/decode speed, peak memory and the fraction of
// keys that attention read.
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include "command.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/generate.h"
#include "kascade/engine/model.h"
#include "kascade/engine/model_path.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"
#include "kascade/json.h"
#include "kascade/plan.h"

namespace kascade::cli {
namespace {

constexpr const char* kUsage =
    "usage: kascade generate [--model GGUF|HF_DIR|default] (--prompt TEXT | --prompt-file FILE)... [--chat]\n"
    "                        [--plan PLAN | --dense] [--backend cpu|cuda] [--no-cuda-graphs] [--max-tokens N]\n"
    "                        [--temperature T] [--top-p P] [--seed S] [--threads N] [--kv-cache f32|f16|fp8]\n"
    "                        [--print-ids]\n"
    "--model default runs with its shipped plan (plans/smollm2-135m-instruct.json) unless --plan\n"
    "or --dense is given; other models run dense unless --plan is given.\n"
    "Several --prompt/--prompt-file options run as one batch (on either backend); prompt b samples\n"
    "with seed S + b. --no-cuda-graphs launches every CUDA decode step's kernels instead of\n"
    "replaying a captured graph. --print-ids prints each prompt's token ids and the generated ids\n"
    "after the text (tokenizer checks; --max-tokens 0 prints the prompt's alone).";

// One prompt as given: its text, or the file to read it from.
struct PromptSource {
  bool from_file = false;
  std::string value;
};

struct GenerateArgs {
  std::string model = "default";
  std::vector<PromptSource> prompts;
  std::optional<std::string> plan;
  bool dense = false;  // dense attention even for the default model
  bool chat = false;
  engine::BackendChoice backend;
  int max_tokens = 128;
  engine::SamplingParams sampling;
  int threads = 0;
  std::optional<DType> kv_cache;
  bool print_ids = false;
};

GenerateArgs parse_args(const Args& args) {
  GenerateArgs a;
  OptionReader r(args);
  std::string v;
  while (!r.done()) {
    if (r.take_value("--model", v)) {
      a.model = v;
    } else if (r.take_value("--prompt", v)) {
      a.prompts.push_back({false, v});
    } else if (r.take_value("--prompt-file", v)) {
      a.prompts.push_back({true, v});
    } else if (r.take_flag("--chat")) {
      a.chat = true;
    } else if (r.take_value("--plan", v)) {
      a.plan = v;
    } else if (r.take_flag("--dense")) {
      a.dense = true;
    } else if (r.take_value("--backend", v)) {
      a.backend.kind = v;
    } else if (r.take_flag("--no-cuda-graphs")) {
      a.backend.cuda_graphs = false;
    } else if (r.take_value("--max-tokens", v)) {
      a.max_tokens = parse_int(v, "--max-tokens");
      KASCADE_CHECK(a.max_tokens >= 0, "--max-tokens must be >= 0, got " << a.max_tokens);
    } else if (r.take_value("--temperature", v)) {
      a.sampling.temperature = static_cast<float>(parse_double(v, "--temperature"));
    } else if (r.take_value("--top-p", v)) {
      a.sampling.top_p = static_cast<float>(parse_double(v, "--top-p"));
    } else if (r.take_value("--seed", v)) {
      const int seed = parse_int(v, "--seed");
      KASCADE_CHECK(seed >= 0, "--seed must be >= 0, got " << seed);
      a.sampling.seed = static_cast<uint64_t>(seed);
    } else if (r.take_flag("--print-ids")) {
      a.print_ids = true;
    } else if (r.take_value("--threads", v)) {
      a.threads = parse_int(v, "--threads");
      KASCADE_CHECK(a.threads >= 0, "--threads must be >= 0, got " << a.threads);
    } else if (take_kv_cache(r, a.kv_cache)) {
    } else {
      KASCADE_FAIL("unknown option '" << r.peek() << "' (see kascade generate --help)");
    }
  }
  KASCADE_CHECK(!(a.dense && a.plan), "--dense and --plan exclude each other");
  KASCADE_CHECK(!a.prompts.empty(), "give a prompt: --prompt TEXT or --prompt-file FILE (see kascade generate --help)");
  KASCADE_CHECK(a.backend.kind == "cpu" || a.backend.kind == "cuda",
                "--backend must be cpu or cuda, got '" << a.backend.kind << "'");
  KASCADE_CHECK(a.backend.cuda_graphs || a.backend.kind == "cuda", "--no-cuda-graphs applies to --backend cuda only");
  check_kv_cache_backend(a.kv_cache, a.backend.kind);
  engine::Sampler check(a.sampling);  // validates temperature and top-p before any work
  (void)check;
  return a;
}

double peak_rss_mib() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

int run_generate(const Args& args) {
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::printf("%s\n%s", kUsage, kKvCacheUsage);
    return 0;
  }
  const GenerateArgs a = parse_args(args);
  // Everything that can fail on bad input is checked before any text is written.
  std::vector<std::string> texts;
  for (const PromptSource& p : a.prompts) {
    texts.push_back(p.from_file ? kascade::read_text_file(p.value) : p.value);
    const std::string what = "prompt " + std::to_string(texts.size());
    KASCADE_CHECK(!texts.back().empty(), what << " is empty");
    engine::check_utf8(texts.back(), what.c_str());
  }
  // The default model's calibrated plan is the default attention (docs/calibration.md).
  std::optional<std::string> plan_path = a.plan;
  if (!plan_path && !a.dense && a.model == "default") plan_path = engine::default_plan_path();
  std::optional<Plan> plan;
  if (plan_path) plan = load_plan(*plan_path);
  engine::check_backend_available(a.backend.kind);
  const engine::ModelSource source = engine::ModelSource::open(a.model);
  engine::check_backend_supports(a.backend.kind, source.config());  // before the weights are read
  const engine::Tokenizer tok = source.tokenizer();
  const engine::Model model =
      source.load(a.backend.kind == "cpu" ? engine::WeightStorage::Quantized : engine::WeightStorage::Fp32);
  if (plan) check_plan_matches(*plan, model.config.layers, model.config.hq, model.config.hkv, model.config.head_dim);

  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& text : texts) {
    std::vector<int32_t> ids;
    if (a.chat) {
      ids = tok.encode(tok.apply_chat_template({{"user", text}}, /*add_generation_prompt=*/true));
    } else {
      if (tok.add_bos()) ids.push_back(tok.bos_id());
      const std::vector<int32_t> body = tok.encode(text);
      ids.insert(ids.end(), body.begin(), body.end());
    }
    KASCADE_CHECK(static_cast<int64_t>(ids.size()) + a.max_tokens <= model.config.context,
                  "prompt " << prompts.size() + 1 << " (" << ids.size() << " tokens) plus --max-tokens " << a.max_tokens
                            << " exceeds the model's context length of " << model.config.context << " tokens");
    prompts.push_back(std::move(ids));
  }

  engine::BackendOptions bopt;
  bopt.threads = a.threads;
  if (a.kv_cache) bopt.cpu_kv_cache = *a.kv_cache;
  const bool progress_tty = isatty(STDERR_FILENO) != 0;
  bopt.on_prefill_progress = [&](int done, int total) {
    if (total <= bopt.prefill_chunk) return;
    std::fprintf(stderr, progress_tty ? "\rprefill: %d/%d tokens" : "prefill: %d/%d tokens\n", done, total);
    if (progress_tty && done == total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  };
  const Plan* plan_ptr = plan ? &*plan : nullptr;
  const std::string attention = plan ? "kascade plan " + *plan_path : "dense";
  const std::string cache =
      a.backend.kind == "cpu" ? std::string(" (") + dtype_name(bopt.cpu_kv_cache) + " KV cache)" : "";
  auto describe = [&](const char* backend_name) {
    std::fprintf(stderr, "model: %s (%s, %d layers, %d/%d heads, head dim %d), %s%s, attention: %s\n",
                 model.config.name.c_str(), engine::to_string(model.config.arch), model.config.layers, model.config.hq,
                 model.config.hkv, model.config.head_dim, backend_name, cache.c_str(), attention.c_str());
  };
  engine::GenerateOptions gopt;
  gopt.max_tokens = a.max_tokens;
  gopt.sampling = a.sampling;

  std::vector<engine::GenerateResult> results;
  if (prompts.size() == 1) {
    auto backend = engine::make_backend(a.backend, model, plan_ptr, bopt);
    describe(backend->name());
    gopt.on_text = [](const std::string& s) {
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
    };
    results.push_back(engine::generate(*backend, tok, prompts[0], gopt));
    std::printf("\n");
  } else {
    auto backend = engine::make_batch_backend(a.backend, model, plan_ptr, static_cast<int>(prompts.size()), bopt);
    const std::string name = a.backend.kind + ", batch of " + std::to_string(prompts.size());
    describe(name.c_str());
    results = engine::generate_batch(*backend, tok, prompts, gopt);
    for (size_t b = 0; b < results.size(); ++b) std::printf("[%zu] %s\n", b + 1, results[b].text.c_str());
  }
  if (a.print_ids) {
    auto print = [](const char* what, size_t b, size_t count, const std::vector<int32_t>& ids) {
      if (count > 1) {
        std::printf("%s [%zu]:", what, b + 1);
      } else {
        std::printf("%s:", what);
      }
      for (int32_t id : ids) std::printf(" %d", id);
      std::printf("\n");
    };
    for (size_t b = 0; b < results.size(); ++b) {
      print("prompt ids", b, results.size(), prompts[b]);
      print("generated ids", b, results.size(), results[b].tokens);
    }
  }
  std::fflush(stdout);

  // Totals over the batch (one prompt: that prompt's numbers).
  int prompt_tokens = 0;
  size_t decode_tokens = 0;
  double keys_read = 0;
  bool all_stopped = true;
  for (const engine::GenerateResult& r : results) {
    prompt_tokens += r.prompt_tokens;
    decode_tokens += r.tokens.size() > 1 ? r.tokens.size() - 1 : 0;
    keys_read += r.keys_read_fraction / static_cast<double>(results.size());
    all_stopped = all_stopped && r.stopped;
  }
  const double prefill_s = results[0].prefill_seconds, decode_s = results[0].decode_seconds;
  std::fprintf(stderr,
               "prefill: %d tokens, %.2f s, %.1f tokens/s | decode: %zu tokens, %.2f s, %.1f tokens/s | "
               "keys read by attention: %.1f%% | peak RSS: %.0f MiB%s\n",
               prompt_tokens, prefill_s, prefill_s > 0 ? prompt_tokens / prefill_s : 0.0, decode_tokens, decode_s,
               decode_s > 0 ? static_cast<double>(decode_tokens) / decode_s : 0.0, 100.0 * keys_read, peak_rss_mib(),
               all_stopped ? "" : " (stopped at --max-tokens)");
  return 0;
}

const Command reg("generate", "generate text with a GGUF model (dense or Kascade attention)", run_generate);

}  // namespace
}  // namespace kascade::cli
