// The generation loop (see generate.h).
#include "kascade/engine/generate.h"

#include <chrono>

#include "kascade/engine/backend.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"

#if defined(KASCADE_ENGINE_HAVE_CUDA)
#include "kascade/engine/cuda_backend.h"
#endif

namespace kascade::engine {

namespace {
void check_choice(const BackendChoice& choice) {
  check_backend_available(choice.kind);
  KASCADE_CHECK(choice.kind == "cuda" || choice.cuda_graphs,
                "CUDA graphs are a feature of the cuda backend; backend '" << choice.kind << "' has none to turn off");
}
}  // namespace

std::unique_ptr<Backend> make_backend(const BackendChoice& choice, const Model& model, const Plan* plan,
                                      const BackendOptions& options) {
  check_choice(choice);
#if defined(KASCADE_ENGINE_HAVE_CUDA)
  if (choice.kind == "cuda") {
    CudaOptions cuda;
    cuda.decode_graphs = choice.cuda_graphs;
    return make_cuda_backend(model, plan, options, cuda);
  }
#endif
  return make_cpu_backend(model, plan, options);
}

std::unique_ptr<BatchBackend> make_batch_backend(const BackendChoice& choice, const Model& model, const Plan* plan,
                                                 int batch, const BackendOptions& options) {
  check_choice(choice);
#if defined(KASCADE_ENGINE_HAVE_CUDA)
  if (choice.kind == "cuda") {
    CudaOptions cuda;
    cuda.decode_graphs = choice.cuda_graphs;
    return make_cuda_batch_backend(model, plan, batch, options, cuda);
  }
#endif
  return make_cpu_batch_backend(model, plan, batch, options);
}

GenerateResult generate(Backend& backend, const Tokenizer& tok, const std::vector<int32_t>& prompt,
                        const GenerateOptions& options) {
  KASCADE_CHECK(!prompt.empty(), "generate: the prompt has no tokens");
  KASCADE_CHECK(options.max_tokens >= 0, "generate: max_tokens must be >= 0, got " << options.max_tokens);
  KASCADE_CHECK(backend.position() == 0, "generate: the backend already holds " << backend.position() << " tokens");
  using clock = std::chrono::steady_clock;
  auto seconds = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };

  GenerateResult r;
  r.prompt_tokens = static_cast<int>(prompt.size());
  Sampler sampler(options.sampling);
  TextStream stream(tok);
  auto emit = [&](const std::string& s) {
    if (s.empty()) return;
    r.text += s;
    if (options.on_text) options.on_text(s);
  };

  const auto t0 = clock::now();
  std::vector<float> logits = backend.forward(prompt, /*all_logits=*/false);
  const auto t1 = clock::now();
  r.prefill_seconds = seconds(t0, t1);
  const int vocab = static_cast<int>(logits.size());
  for (int step = 0; step < options.max_tokens; ++step) {
    const int32_t next = sampler.sample(logits.data(), vocab);
    r.tokens.push_back(next);
    if (tok.is_stop(next)) {
      r.stopped = true;
      break;
    }
    emit(stream.push(next));
    if (step + 1 == options.max_tokens) break;
    logits = backend.forward({next}, false);
  }
  emit(stream.finish());
  r.decode_seconds = seconds(t1, clock::now());
  r.keys_read_fraction = backend.stats().keys_read_fraction();
  return r;
}

std::vector<GenerateResult> generate_batch(BatchBackend& backend, const Tokenizer& tok,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& options) {
  const size_t batch = prompts.size();
  KASCADE_CHECK(batch == static_cast<size_t>(backend.batch_size()),
                "generate_batch: " << batch << " prompts for a batch of " << backend.batch_size());
  KASCADE_CHECK(options.max_tokens >= 0, "generate_batch: max_tokens must be >= 0, got " << options.max_tokens);
  for (size_t b = 0; b < batch; ++b) {
    KASCADE_CHECK(!prompts[b].empty(), "generate_batch: prompt " << b << " has no tokens");
    KASCADE_CHECK(backend.position(static_cast<int>(b)) == 0, "generate_batch: sequence " << b << " is not empty");
  }
  using clock = std::chrono::steady_clock;
  auto seconds = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };

  std::vector<GenerateResult> results(batch);
  std::vector<Sampler> samplers;
  std::vector<TextStream> streams;
  for (size_t b = 0; b < batch; ++b) {
    SamplingParams p = options.sampling;
    p.seed += b;
    samplers.emplace_back(p);
    streams.emplace_back(tok);
    results[b].prompt_tokens = static_cast<int>(prompts[b].size());
  }
  const auto t0 = clock::now();
  std::vector<std::vector<float>> logits = backend.forward(prompts);
  const auto t1 = clock::now();
  std::vector<bool> active(batch, options.max_tokens > 0);
  for (int step = 0; step < options.max_tokens; ++step) {
    std::vector<std::vector<int32_t>> next(batch);
    bool any = false;
    for (size_t b = 0; b < batch; ++b) {
      if (!active[b]) continue;
      const int32_t id = samplers[b].sample(logits[b].data(), static_cast<int>(logits[b].size()));
      results[b].tokens.push_back(id);
      if (tok.is_stop(id)) {
        results[b].stopped = true;
        active[b] = false;
        continue;
      }
      results[b].text += streams[b].push(id);
      if (step + 1 == options.max_tokens) {
        active[b] = false;
        continue;
      }
      next[b] = {id};
      any = true;
    }
    if (!any) break;
    std::vector<std::vector<float>> stepped = backend.forward(next);
    for (size_t b = 0; b < batch; ++b) {
      if (!next[b].empty()) logits[b] = std::move(stepped[b]);
    }
  }
  const auto t2 = clock::now();
  for (size_t b = 0; b < batch; ++b) {
    results[b].text += streams[b].finish();
    results[b].prefill_seconds = seconds(t0, t1);
    results[b].decode_seconds = seconds(t1, t2);
    results[b].keys_read_fraction = backend.stats(static_cast<int>(b)).keys_read_fraction();
  }
  return results;
}

}  // namespace kascade::engine
