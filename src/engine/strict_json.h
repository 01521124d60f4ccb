// src/engine/strict_json.h — JSON parsing for model files (safetensors headers, config.json,
// tokenizer.json): nlohmann's parser, plus what it does not check by itself. Duplicate keys are
// an error (nlohmann silently keeps the last one, so two weights or two vocabulary entries with
// one name would pass unseen) and nesting is capped. Internal to the engine library.
//
//   nlohmann::json j = kascade::engine::parse_json_strict(text, "model/config.json");
//   std::string text = kascade::engine::read_text_file(path);   // throws naming the path
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

namespace kascade::engine {

// Parses `size` bytes at `data`; errors are kascade::Error "<name>: invalid JSON: ..." or
// "<name>: duplicate key '...'".
nlohmann::json parse_json_strict(const char* data, size_t size, const std::string& name);
inline nlohmann::json parse_json_strict(const std::string& text, const std::string& name) {
  return parse_json_strict(text.data(), text.size(), name);
}

// The whole file (at most max_bytes), or a kascade::Error naming the path.
std::string read_text_file(const std::string& path, size_t max_bytes = size_t{1} << 30);

}  // namespace kascade::engine
