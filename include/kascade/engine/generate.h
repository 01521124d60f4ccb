// kascade/engine/generate.h — prompt in, tokens out: prefill, then decode one token at a time
// until a stop token or the token limit, streaming text as it becomes complete UTF-8.
//
//   kascade::engine::GenerateOptions opt;
//   opt.max_tokens = 64;
//   opt.on_text = [](const std::string& s) { std::cout << s << std::flush; };
//   kascade::engine::GenerateResult r = kascade::engine::generate(*backend, tok, prompt_ids, opt);
//   r.decode_tokens_per_second();
//
// make_backend / make_batch_backend pick the backend generation runs on by name ("cpu" or
// "cuda"), with the CUDA backend's decode graphs on or off.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kascade/engine/sampler.h"

namespace kascade {
struct Plan;
}

namespace kascade::engine {

class Backend;
class BatchBackend;
class Tokenizer;
struct BackendOptions;
struct Model;

// Which backend generation runs on.
struct BackendChoice {
  std::string kind = "cpu";  // "cpu" or "cuda"
  bool cuda_graphs = true;   // cuda: decode steps replay CUDA graphs (CudaOptions::decode_graphs)
};
// One sequence / a batch of `batch` sequences on the chosen backend; a choice this build cannot
// run (no CUDA, graphs off for the CPU backend) is an error naming it.
std::unique_ptr<Backend> make_backend(const BackendChoice& choice, const Model& model, const Plan* plan,
                                      const BackendOptions& options);
std::unique_ptr<BatchBackend> make_batch_backend(const BackendChoice& choice, const Model& model, const Plan* plan,
                                                 int batch, const BackendOptions& options);

struct GenerateOptions {
  int max_tokens = 128;
  SamplingParams sampling;
  std::function<void(const std::string&)> on_text;  // streamed text pieces
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (the stop token included when one ended it)
  std::string text;             // their text, special tokens dropped
  bool stopped = false;         // ended by a stop token (not by max_tokens)
  int prompt_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;    // all forward passes after the first generated token
  double keys_read_fraction = 1;
  double prefill_tokens_per_second() const { return prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0; }
  double decode_tokens_per_second() const {
    const size_t steps = tokens.size() > 1 ? tokens.size() - 1 : 0;
    return decode_seconds > 0 ? static_cast<double>(steps) / decode_seconds : 0;
  }
};

// Runs the prompt through `backend` (which must be empty) and generates up to max_tokens tokens.
GenerateResult generate(Backend& backend, const Tokenizer& tok, const std::vector<int32_t>& prompt,
                        const GenerateOptions& options);

// The same for a batch: prompt b runs in sequence b of `backend` (empty, batch_size() ==
// prompts.size()). Each sequence samples with seed `options.sampling.seed + b` and stops on its
// own; a stopped sequence sits out the remaining steps. on_text is not called (the texts are in
// the results). Times are the batch's: prefill_seconds for all prompts, decode_seconds for all
// decode steps.
std::vector<GenerateResult> generate_batch(BatchBackend& backend, const Tokenizer& tok,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& options);

}  // namespace kascade::engine
