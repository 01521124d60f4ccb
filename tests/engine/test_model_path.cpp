// `--model default` resolution: the package directory, KASCADE_MODEL_DIR, and clear errors.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "kascade/engine/model_path.h"
#include "kascade/error.h"

using kascade::engine::resolve_model_path;

namespace {

std::string error_of(const std::string& model) {
  try {
    resolve_model_path(model);
  } catch (const kascade::Error& e) {
    return e.what();
  }
  return "";
}

// Restores KASCADE_MODEL_DIR when a test ends.
struct ModelDirGuard {
  std::string saved;
  bool had = false;
  ModelDirGuard() {
    if (const char* v = std::getenv("KASCADE_MODEL_DIR")) {
      had = true;
      saved = v;
    }
  }
  ~ModelDirGuard() {
    if (had) {
      setenv("KASCADE_MODEL_DIR", saved.c_str(), 1);
    } else {
      unsetenv("KASCADE_MODEL_DIR");
    }
  }
};

}  // namespace

TEST(ModelPath, DefaultIsTheInstalledSmolLM2) {
  ModelDirGuard guard;
  unsetenv("KASCADE_MODEL_DIR");
  const std::string path = resolve_model_path("default");
  EXPECT_NE(path.find("SmolLM2-135M-Instruct.Q4_1.gguf"), std::string::npos) << path;
  // The same file through KASCADE_MODEL_DIR.
  const std::string dir = path.substr(0, path.rfind('/'));
  setenv("KASCADE_MODEL_DIR", dir.c_str(), 1);
  EXPECT_EQ(resolve_model_path("default"), path);
}

TEST(ModelPath, ClearErrors) {
  ModelDirGuard guard;
  setenv("KASCADE_MODEL_DIR", "/nonexistent/models", 1);
  EXPECT_NE(error_of("default").find("KASCADE_MODEL_DIR is set to '/nonexistent/models'"), std::string::npos);
  EXPECT_NE(error_of("/nonexistent/x.gguf").find("'/nonexistent/x.gguf' does not exist"), std::string::npos);
  // A directory that is not a Hugging Face model directory.
  EXPECT_NE(error_of(KASCADE_TEST_DATA).find("is a directory without config.json"), std::string::npos);
}

TEST(ModelPath, OpensGgufFilesAndHuggingFaceDirectories) {
  const std::string hf = std::string(KASCADE_TEST_DATA) + "/hf/qwen2";
  const auto dir = kascade::engine::ModelSource::open(hf);
  EXPECT_TRUE(dir.is_hf_directory());
  EXPECT_EQ(dir.config().arch, kascade::engine::Architecture::Qwen2);
  EXPECT_EQ(dir.load().layers.size(), 2u);
  EXPECT_EQ(dir.tokenizer().chat_format(), kascade::engine::ChatFormat::ChatML);
  const auto gguf = kascade::engine::ModelSource::open(std::string(KASCADE_TEST_DATA) + "/engine/tiny_qwen3.gguf");
  EXPECT_FALSE(gguf.is_hf_directory());
  ASSERT_NE(gguf.gguf(), nullptr);
  EXPECT_EQ(gguf.config().arch, kascade::engine::Architecture::Qwen3);
  EXPECT_EQ(gguf.load().config.rope_style, kascade::engine::RopeStyle::Halves);
}
