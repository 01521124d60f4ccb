// The generation loop (see generate.h).
#include "kascade/engine/generate.h"

#include <chrono>

#include "kascade/engine/backend.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"

namespace kascade::engine {

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

}  // namespace kascade::engine
