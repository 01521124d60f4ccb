// kascade/json.h — strict JSON reading shared by every parser of the project (plans, case files,
// Hugging Face config/tokenizer files, safetensors headers): nlohmann's parser plus what it does
// not check by itself. Duplicate keys are an error (nlohmann silently keeps the last one, so two
// weights or two plan fields with one name would pass unseen) and nesting is capped (no stack
// overflow on "[[[[...").
//
//   nlohmann::json j = kascade::parse_json_strict(kascade::read_text_file(path), path);
//
// Only json_fwd.hpp comes with this header (the full one costs every includer seconds of
// parsing): a file that parses or builds JSON includes <nlohmann/json.hpp> itself.
//
// Errors are kascade::Error naming the input: "<name>: invalid JSON: ...", "<name>: duplicate key
// 'x'", "<path>: cannot open: ...".
#pragma once

#include <cstddef>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace kascade {

// Deeper than any file the project reads nests (tokenizer.json: about 6).
constexpr int kDefaultMaxJsonDepth = 64;

// Parses `size` bytes at `data`.
nlohmann::json parse_json_strict(const char* data, size_t size, const std::string& name,
                                 int max_depth = kDefaultMaxJsonDepth);
nlohmann::json parse_json_strict(const std::string& text, const std::string& name,
                                 int max_depth = kDefaultMaxJsonDepth);

// Appends `j` as two-space indented JSON, except that arrays of scalars stay on one line (a
// plan's head map, a report's matrices: one row per line reads far better than one number per
// line). Works for nlohmann::json and nlohmann::ordered_json (key order kept).
template <typename Json>
void append_pretty_json(const Json& j, int indent, std::string& out) {
  bool nested = false;
  for (const auto& element : j) nested = nested || element.is_structured();
  if (!j.is_structured() || j.empty()) {
    out += j.dump();
    return;
  }
  if (j.is_array() && !nested) {
    out += '[';
    for (size_t i = 0; i < j.size(); ++i) out += (i ? ", " : "") + j[i].dump();
    out += ']';
    return;
  }
  const std::string pad(static_cast<size_t>(indent) + 2, ' ');
  out += j.is_object() ? "{\n" : "[\n";
  size_t i = 0;
  for (auto it = j.begin(); it != j.end(); ++it, ++i) {
    out += pad;
    if (j.is_object()) out += Json(it.key()).dump() + ": ";
    append_pretty_json(*it, indent + 2, out);
    out += i + 1 < j.size() ? ",\n" : "\n";
  }
  out += std::string(static_cast<size_t>(indent), ' ') + (j.is_object() ? "}" : "]");
}

// The whole file as text; throws naming the path when it cannot be read or holds more than
// max_bytes bytes.
std::string read_text_file(const std::string& path, size_t max_bytes = size_t{1} << 30);

}  // namespace kascade
