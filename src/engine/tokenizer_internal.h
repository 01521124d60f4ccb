// src/engine/tokenizer_internal.h — what the tokenizer's source files share (private to the
// engine): the definitions of Tokenizer::Spec and Tokenizer::PreTokenizer, and the helpers of
// tokenizer_utf8.cpp, tokenizer_pretokenize.cpp, tokenizer_bpe.cpp and tokenizer_chat.cpp.
#pragma once

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kascade/engine/tokenizer.h"

namespace kascade::engine {

// Everything a tokenizer is made of, whichever file it came from (GGUF metadata or tokenizer.json).
struct Tokenizer::Spec {
  std::string name;                                         // prefixes errors
  std::vector<std::string> pieces;                          // per id: GPT-2 byte alphabet / "▁" text, or a special's text
  std::vector<uint8_t> special;                             // per id: matched in text, decoded as its text
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::vector<double> scores;                               // GGUF "llama": merge by score (no merge list)
  bool sentencepiece = false;
  DummyPrefix dummy_prefix = DummyPrefix::None;
  bool prefix_unless_space = false;
  bool split_at_metaspace = false;
  bool strip_leading_space = false;
  std::vector<std::string> regexes;                         // the pre-tokenizer, applied in sequence
  bool ignore_merges = false;
  int32_t bos_id = -1;
  bool add_bos = false;
  std::vector<int32_t> stop_ids;                            // besides the end-of-turn tokens found by text
  std::string chat_template;                                // Jinja source, or empty
  bool nfc = false;                                         // the text is to be normalized to NFC first
};

// The pre-tokenizer: compiled PCRE2 patterns (tokenizer_pretokenize.cpp).
struct Tokenizer::PreTokenizer {
  std::vector<pcre2_code*> codes;
  pcre2_match_data* match = nullptr;

  explicit PreTokenizer(const std::vector<std::string>& patterns);
  ~PreTokenizer();
  void release();
  // Splits `text` (valid UTF-8) by every pattern in turn.
  std::vector<std::string> split(const std::string& text) const;
  void split_one(pcre2_code* code, const std::string& s, std::vector<std::string>& out) const;
};

namespace tokenizer_detail {

// SentencePiece's stand-in for a space, U+2581 LOWER ONE EIGHTH BLOCK.
inline const std::string kMetaspace = "\xE2\x96\x81";

// ---- tokenizer_pretokenize.cpp
// GPT-2's pre-tokenizer regex (also a tokenizer.json ByteLevel step with use_regex).
extern const char* const kGpt2Regex;
// The pre-tokenizer regexes of the GGUF tokenizer.ggml.pre families.
struct PreTokenizerKind {
  const char* names[4];
  std::vector<const char*> regexes;
  bool ignore_merges;
};
const std::vector<PreTokenizerKind>& pre_tokenizer_kinds();

// ---- tokenizer_bpe.cpp
// GPT-2's reversible map from bytes to printable code points.
std::vector<uint32_t> byte_to_codepoint();

// ---- tokenizer_utf8.cpp
void append_utf8(std::string& s, uint32_t cp);
// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is invalid or incomplete.
size_t utf8_sequence_length(const std::string& s, size_t i);
// Decodes the code points of a valid UTF-8 string.
std::vector<uint32_t> codepoints(const std::string& s);
// Refuses text that NFC might change (kascade does not implement Unicode normalization).
void check_nfc_stable(const std::string& text);

// ---- tokenizer_chat.cpp
// The literal text between `open` and `close` in a template, with Jinja "\n" escapes resolved;
// empty when the text between them is not a plain literal.
std::string literal_between(const std::string& tmpl, const std::string& open, const std::string& close);

}  // namespace tokenizer_detail
}  // namespace kascade::engine
