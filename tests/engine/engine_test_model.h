// Shared by the engine tests: the default model, loaded once per test binary.
#pragma once

#include "kascade/engine/gguf.h"
#include "kascade/engine/model.h"
#include "kascade/engine/model_path.h"
#include "kascade/engine/tokenizer.h"

namespace kascade::engine::test {

inline const GgufFile& default_gguf() {
  static const GgufFile gguf = GgufFile::open(resolve_model_path("default"));
  return gguf;
}
inline const Model& default_model() {
  static const Model model = load_model(default_gguf());
  return model;
}
inline const Tokenizer& default_tokenizer() {
  static const Tokenizer tok = Tokenizer::from_gguf(default_gguf());
  return tok;
}

}  // namespace kascade::engine::test
