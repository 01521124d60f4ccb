// Backend selection: the CPU backend always, the CUDA backend when this build includes it.
#include "kascade/engine/backend.h"

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

void check_backend_available(const std::string& kind) {
#if !defined(KASCADE_ENGINE_HAVE_CUDA)
  KASCADE_CHECK(kind != "cuda", "backend 'cuda': this build does not include the engine's CUDA backend "
                                "(build with CUDA, or use --backend cpu)");
#endif
  KASCADE_CHECK(kind == "cpu" || kind == "cuda", "unknown backend '" << kind << "' (supported: cpu, cuda)");
}

std::unique_ptr<Backend> make_backend(const std::string& kind, const Model& model, const Plan* plan,
                                      const BackendOptions& options) {
  check_backend_available(kind);
#if defined(KASCADE_ENGINE_HAVE_CUDA)
  if (kind == "cuda") return make_cuda_backend(model, plan, options);
#endif
  return make_cpu_backend(model, plan, options);
}

}  // namespace kascade::engine
