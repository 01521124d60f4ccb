// tests/engine/hf_test_util.h — what the Hugging Face model and tokenizer tests share: the
// fixture directory (tests/data/hf/, made by tools/make_hf_fixtures.py), reading its JSON, and
// the message of the kascade::Error a call throws.
//
//   const nlohmann::json ids = kascade::testing::read_json(kascade::testing::kHfData + "tokenizer_ids.json");
//   EXPECT_NE(kascade::testing::error_of([&] { load_hf_model(dir); }).find("config.json"), std::string::npos);
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "kascade/error.h"
#include "kascade/json.h"

namespace kascade::testing {

inline const std::string kHfData = std::string(KASCADE_TEST_DATA) + "/hf/";

inline nlohmann::json read_json(const std::string& path) { return parse_json_strict(read_text_file(path), path); }

// The message of the kascade::Error that fn throws, or "" when it throws none.
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const kascade::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace kascade::testing
