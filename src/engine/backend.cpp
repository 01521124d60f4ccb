// Backend selection: the CPU backend always, the CUDA backend when this build includes it.
#include "kascade/engine/backend.h"

#include "kascade/engine/model.h"
#include "kascade/error.h"

#if defined(KASCADE_ENGINE_HAVE_CUDA)
#include "kascade/engine/cuda_backend.h"
#endif

namespace kascade::engine {

void Backend::set_query_key_hook(QueryKeyHook) {
  KASCADE_FAIL("backend '" << name() << "' does not provide the query/key hook");
}

void Backend::set_attention_override(AttentionOverride) {
  KASCADE_FAIL("backend '" << name() << "' does not support an attention override");
}

void Backend::truncate(int) { KASCADE_FAIL("backend '" << name() << "' does not support truncate"); }

void Backend::set_attention_schedule(const AttentionSchedule*) {
  KASCADE_FAIL("backend '" << name() << "' does not run attention schedules (selection policies run on the host there)");
}

std::vector<float> Backend::forward_decode_rows(const std::vector<int32_t>&) {
  KASCADE_FAIL("backend '" << name() << "' does not run decode rows natively");
}

void check_backend_available(const std::string& kind) {
#if !defined(KASCADE_ENGINE_HAVE_CUDA)
  KASCADE_CHECK(kind != "cuda", "backend 'cuda': this build does not include the engine's CUDA backend "
                                "(build with CUDA, or use --backend cpu)");
#endif
  KASCADE_CHECK(kind == "cpu" || kind == "cuda", "unknown backend '" << kind << "' (supported: cpu, cuda)");
}

void check_backend_supports(const std::string& kind, const ModelConfig& config) {
  // The CUDA kernels attend to every causal key: a window shorter than the model's context would
  // be ignored silently once a sequence outgrows it.
  KASCADE_CHECK(kind != "cuda" || config.sliding_window == 0 || config.sliding_window >= config.context,
                "backend 'cuda': model '" << config.name << "' uses a sliding attention window of "
                                          << config.sliding_window << " tokens (context " << config.context
                                          << "), which the CUDA backend does not implement; use --backend cpu");
}

std::unique_ptr<Backend> make_backend(const std::string& kind, const Model& model, const Plan* plan,
                                      const BackendOptions& options) {
  check_backend_available(kind);
  check_backend_supports(kind, model.config);
  KASCADE_CHECK(kind == "cpu" || !model.has_quantized_weights(),
                kind << " backend: the model was loaded with quantized weights, which only the CPU backend reads "
                        "(load it with WeightStorage::Fp32)");
#if defined(KASCADE_ENGINE_HAVE_CUDA)
  if (kind == "cuda") return make_cuda_backend(model, plan, options);
#endif
  return make_cpu_backend(model, plan, options);
}

}  // namespace kascade::engine
