// Strict JSON for model files (see strict_json.h).
#include "strict_json.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <vector>

#include "kascade/error.h"

namespace kascade::engine {

namespace {
// Far deeper than any model file nests (tokenizer.json: about 6), low enough to stop a stack
// overflow on "[[[[...".
constexpr int kMaxJsonDepth = 64;
}  // namespace

nlohmann::json parse_json_strict(const char* data, size_t size, const std::string& name) {
  using Json = nlohmann::json;
  std::vector<std::set<std::string>> open_objects;
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) {
    KASCADE_CHECK(depth <= kMaxJsonDepth, name << ": JSON nested deeper than " << kMaxJsonDepth << " levels");
    switch (event) {
      case Json::parse_event_t::object_start: open_objects.emplace_back(); break;
      case Json::parse_event_t::object_end: open_objects.pop_back(); break;
      case Json::parse_event_t::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        KASCADE_CHECK(open_objects.back().insert(key).second, name << ": duplicate key '" << key << "'");
        break;
      }
      default: break;
    }
    return true;
  };
  try {
    return Json::parse(data, data + size, callback, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const Json::exception& e) {
    // Drop nlohmann's "[json.exception.parse_error.101] " prefix: the rest is the useful part.
    std::string what = e.what();
    const size_t bracket = what.find("] ");
    if (what.rfind("[json.exception", 0) == 0 && bracket != std::string::npos) what = what.substr(bracket + 2);
    KASCADE_FAIL(name << ": invalid JSON: " << what);
  }
}

std::string read_text_file(const std::string& path, size_t max_bytes) {
  std::ifstream f(path, std::ios::binary);
  KASCADE_CHECK(f.good(), path << ": cannot open: " << std::strerror(errno));
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  KASCADE_CHECK(size >= 0, path << ": cannot read its size (not a regular file?)");
  KASCADE_CHECK(static_cast<uint64_t>(size) <= max_bytes,
                path << ": " << size << " bytes is more than the " << max_bytes << " this reader accepts");
  std::string text(static_cast<size_t>(size), '\0');
  f.seekg(0);
  f.read(&text[0], size);
  KASCADE_CHECK(f.gcount() == size, path << ": short read");
  return text;
}

}  // namespace kascade::engine
