// Strict JSON (see kascade/json.h).
#include "kascade/json.h"

#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "file_io.h"
#include "kascade/error.h"

namespace kascade {

nlohmann::json parse_json_strict(const char* data, size_t size, const std::string& name, int max_depth) {
  using Json = nlohmann::json;
  std::vector<std::set<std::string>> open_objects;
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) {
    KASCADE_CHECK(depth <= max_depth, name << ": JSON nested deeper than " << max_depth << " levels");
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

nlohmann::json parse_json_strict(const std::string& text, const std::string& name, int max_depth) {
  return parse_json_strict(text.data(), text.size(), name, max_depth);
}

std::string read_text_file(const std::string& path, size_t max_bytes) {
  const std::vector<uint8_t> bytes = detail::read_file(path, max_bytes);
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace kascade
