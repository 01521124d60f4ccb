// Shared by the calibration protocol tests: a word-level stand-in tokenizer for models without
// one (the tiny test model has 40 token ids and no vocabulary), and the dev split's documents.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kascade/eval/corpus.h"
#include "kascade/eval/tasks.h"

namespace kascade::testing {

constexpr int32_t kWordBos = 1;

// One token per word (with its leading spaces) and per run of other whitespace, the id a hash of
// its text in 2..vocab-1: deterministic, and short enough that the tasks fit a 256-token context.
inline eval::TaskTokenizer word_tokenizer(int vocab) {
  eval::TaskTokenizer tok;
  tok.bos = kWordBos;
  tok.encode = [vocab](const std::string& text) {
    std::vector<int32_t> ids;
    auto emit = [&](const std::string& piece) {
      uint64_t h = 1469598103934665603ull;  // FNV-1a
      for (unsigned char c : piece) h = (h ^ c) * 1099511628211ull;
      ids.push_back(static_cast<int32_t>(2 + h % static_cast<uint64_t>(vocab - 2)));
    };
    std::string piece;
    for (char c : text) {
      const bool space = c == ' ' || c == '\n' || c == '\t';
      if (!space && !piece.empty() && piece.find_first_not_of(" \n\t") != std::string::npos) {
        piece += c;
        continue;
      }
      if (space && !piece.empty() && piece.find_first_not_of(" \n\t") != std::string::npos) {
        emit(piece);
        piece.clear();
      }
      piece += c;
    }
    if (!piece.empty()) emit(piece);
    return ids;
  };
  return tok;
}

inline const std::vector<eval::Document>& dev_documents() {
  static const std::vector<eval::Document> docs = eval::natural_text(eval::Split::Dev);
  return docs;
}

}  // namespace kascade::testing
