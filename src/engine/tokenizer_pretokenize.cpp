// The byte-level pre-tokenizer: the regexes of each model family and their PCRE2 matching.
#include "tokenizer_internal.h"

#include <algorithm>

#include "kascade/error.h"

namespace kascade::engine {

namespace tokenizer_detail {

// The pre-tokenizer regexes of each family, applied in sequence: every regex splits each piece
// left by the previous one into its matches and the gaps between them (HF "Isolated").
constexpr const char* kDigitsOneByOne = "\\p{N}";
const char* const kGpt2Regex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
constexpr const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const std::vector<PreTokenizerKind>& pre_tokenizer_kinds() {
  static const std::vector<PreTokenizerKind> kinds = {
      {{"smollm", "starcoder", "refact", "codeshell"}, {kDigitsOneByOne, kGpt2Regex}, false},
      {{"gpt-2", "gpt2", "default", nullptr}, {kGpt2Regex}, false},
      {{"llama-bpe", "llama3", "smaug-bpe", nullptr}, {kLlama3Regex}, true},
      {{"qwen2", nullptr, nullptr, nullptr}, {kQwen2Regex}, false},
  };
  return kinds;
}

}  // namespace tokenizer_detail

using tokenizer_detail::utf8_sequence_length;

Tokenizer::PreTokenizer::PreTokenizer(const std::vector<std::string>& patterns) {
  for (const std::string& p : patterns) {
    int err = 0;
    PCRE2_SIZE err_offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &err_offset, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      release();
      KASCADE_FAIL("tokenizer: cannot compile pre-tokenizer regex at offset " << err_offset << ": "
                                                                             << reinterpret_cast<char*>(msg));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional speed-up: interpretation is the fallback
    codes.push_back(code);
  }
  match = pcre2_match_data_create(4, nullptr);
}

Tokenizer::PreTokenizer::~PreTokenizer() { release(); }

void Tokenizer::PreTokenizer::release() {
  for (pcre2_code* c : codes) pcre2_code_free(c);
  codes.clear();
  if (match) pcre2_match_data_free(match);
  match = nullptr;
}

std::vector<std::string> Tokenizer::PreTokenizer::split(const std::string& text) const {
  std::vector<std::string> pieces{text};
  for (pcre2_code* code : codes) {
    std::vector<std::string> next;
    for (const std::string& piece : pieces) split_one(code, piece, next);
    pieces.swap(next);
  }
  return pieces;
}

void Tokenizer::PreTokenizer::split_one(pcre2_code* code, const std::string& s, std::vector<std::string>& out) const {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t pos = 0, gap_start = 0;
  while (pos < s.size()) {
    const int rc = pcre2_match(code, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, match, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    KASCADE_CHECK(rc >= 0, "tokenizer: regex match failed with PCRE2 error " << rc);
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match);
    const size_t begin = ov[0], end = ov[1];
    if (end == begin) {  // an empty match: step one character forward
      pos = begin + std::max<size_t>(1, utf8_sequence_length(s, begin));
      continue;
    }
    if (begin > gap_start) out.push_back(s.substr(gap_start, begin - gap_start));
    out.push_back(s.substr(begin, end - begin));
    pos = gap_start = end;
  }
  if (gap_start < s.size()) out.push_back(s.substr(gap_start));
}

}  // namespace kascade::engine
