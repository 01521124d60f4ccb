// BPE tokenizer (see tokenizer.h): special-token split; byte-level (PCRE2 pre-tokenizer, GPT-2
// byte alphabet) or SentencePiece-style ("▁" for spaces, dummy prefix, byte fallback) symbols;
// rank-ordered merges; chat templates of the ChatML, Llama 3, Llama 2 and Mistral families.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "kascade/engine/tokenizer.h"

#include <pcre2.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <queue>
#include <tuple>
#include <fstream>
#include <limits>

#include "kascade/engine/gguf.h"
#include "kascade/error.h"
#include "kascade/json.h"

namespace kascade::engine {

namespace {

// GGUF token types (tokenizer.ggml.token_type).
constexpr int64_t kTokenUnknown = 2;
constexpr int64_t kTokenControl = 3;
constexpr int64_t kTokenUserDefined = 4;

// SentencePiece's stand-in for a space, U+2581 LOWER ONE EIGHTH BLOCK.
const std::string kMetaspace = "\xE2\x96\x81";

// The byte a SentencePiece byte-fallback token "<0xNN>" (two upper-case hex digits) stands for, or -1.
int fallback_byte(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  int value = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = piece[i];
    if (c >= '0' && c <= '9') value = value * 16 + (c - '0');
    else if (c >= 'A' && c <= 'F') value = value * 16 + (c - 'A' + 10);
    else return -1;
  }
  return value;
}

std::string fallback_piece(int byte) {
  char text[8];
  std::snprintf(text, sizeof text, "<0x%02X>", byte);
  return text;
}

// `s` with every occurrence of `from` replaced by `to`.
std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out += to;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

// The pre-tokenizer regexes of each family, applied in sequence: every regex splits each piece
// left by the previous one into its matches and the gaps between them (HF "Isolated").
constexpr const char* kDigitsOneByOne = "\\p{N}";
constexpr const char* kGpt2Regex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
constexpr const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

struct PreTokenizerKind {
  const char* names[4];
  std::vector<const char*> regexes;
  bool ignore_merges;
};

const std::vector<PreTokenizerKind>& pre_tokenizer_kinds() {
  static const std::vector<PreTokenizerKind> kinds = {
      {{"smollm", "starcoder", "refact", "codeshell"}, {kDigitsOneByOne, kGpt2Regex}, false},
      {{"gpt-2", "gpt2", "default", nullptr}, {kGpt2Regex}, false},
      {{"llama-bpe", "llama3", "smaug-bpe", nullptr}, {kLlama3Regex}, true},
      {{"qwen2", nullptr, nullptr, nullptr}, {kQwen2Regex}, false},
  };
  return kinds;
}

// GPT-2's reversible map from bytes to printable code points: printable Latin-1 bytes map to
// themselves, the rest to 256, 257, ... in byte order.
std::vector<uint32_t> byte_to_codepoint() {
  std::vector<uint32_t> map(256, 0);
  std::vector<bool> direct(256, false);
  for (int b = '!'; b <= '~'; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) map[b] = direct[b] ? static_cast<uint32_t>(b) : next++;
  return map;
}

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is invalid or incomplete.
size_t utf8_sequence_length(const std::string& s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t len;
  uint32_t cp;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
  else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
  else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
  else return 0;
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  // Overlong forms, surrogates and values past U+10FFFF are invalid.
  if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return 0;
  if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return 0;
  return len;
}

// Decodes the code points of a valid UTF-8 string.
std::vector<uint32_t> codepoints(const std::string& s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const size_t len = utf8_sequence_length(s, i);
    KASCADE_CHECK(len > 0, "tokenizer: invalid UTF-8 at byte " << i);
    const auto c = static_cast<unsigned char>(s[i]);
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.push_back(cp);
    i += len;
  }
  return out;
}

// Code points that NFC leaves unchanged in any context (NFC_Quick_Check = Yes, combining class
// 0, not the second half of a canonical composition) within the Latin, Greek, Cyrillic,
// punctuation, symbol, CJK, kana, Hangul syllable, fullwidth and emoji blocks: text made only of
// them is already NFC. Generated by `tools/make_hf_fixtures.py nfc-table`:
// Unicode 14.0.0 (Python 3.11.7 unicodedata), 50 ranges.
constexpr uint32_t kNfcStableRanges[][2] = {
    {0x0, 0x2FF}, {0x370, 0x373}, {0x375, 0x377}, {0x37A, 0x37D},
    {0x37F, 0x37F}, {0x384, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C},
    {0x38E, 0x3A1}, {0x3A3, 0x482}, {0x2002, 0x2064}, {0x2066, 0x206F},
    {0x2100, 0x2125}, {0x2127, 0x2129}, {0x212C, 0x214F}, {0x2190, 0x2328},
    {0x232B, 0x23FF}, {0x2500, 0x27BF}, {0x3000, 0x3029}, {0x3030, 0x303F},
    {0x3041, 0x3096}, {0x30A1, 0x30FA}, {0x4E00, 0x9FFF}, {0xAC00, 0xD7A3},
    {0xFE0F, 0xFE0F}, {0xFF01, 0xFF5E}, {0x1F300, 0x1F6D7}, {0x1F6DD, 0x1F6EC},
    {0x1F6F0, 0x1F6FC}, {0x1F700, 0x1F773}, {0x1F780, 0x1F7D8}, {0x1F7E0, 0x1F7EB},
    {0x1F7F0, 0x1F7F0}, {0x1F800, 0x1F80B}, {0x1F810, 0x1F847}, {0x1F850, 0x1F859},
    {0x1F860, 0x1F887}, {0x1F890, 0x1F8AD}, {0x1F8B0, 0x1F8B1}, {0x1F900, 0x1FA53},
    {0x1FA60, 0x1FA6D}, {0x1FA70, 0x1FA74}, {0x1FA78, 0x1FA7C}, {0x1FA80, 0x1FA86},
    {0x1FA90, 0x1FAAC}, {0x1FAB0, 0x1FABA}, {0x1FAC0, 0x1FAC5}, {0x1FAD0, 0x1FAD9},
    {0x1FAE0, 0x1FAE7}, {0x1FAF0, 0x1FAF6},
};

bool nfc_stable(uint32_t cp) {
  for (const auto& r : kNfcStableRanges) {
    if (cp < r[0]) return false;  // the ranges ascend
    if (cp <= r[1]) return true;
  }
  return false;
}

// kascade does not implement Unicode normalization: under an NFC normalizer, text that NFC might
// change is refused rather than tokenized differently from the model's own tokenizer.
void check_nfc_stable(const std::string& text) {
  size_t offset = 0;
  for (uint32_t cp : codepoints(text)) {
    if (!nfc_stable(cp)) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "U+%04X", cp);
      KASCADE_FAIL("tokenizer: this model's tokenizer normalizes text to NFC, which kascade implements only for "
                   "text already in NFC; character "
                   << hex << " at byte " << offset << " is outside the characters known to be NFC-stable");
    }
    std::string bytes;
    append_utf8(bytes, cp);
    offset += bytes.size();
  }
}

// The literal text between `open` and `close` in a template, with Jinja "\n" escapes resolved;
// empty when the text between them is not a plain literal.
std::string literal_between(const std::string& tmpl, const std::string& open, const std::string& close) {
  const size_t a = tmpl.find(open);
  if (a == std::string::npos) return "";
  const size_t start = a + open.size();
  const size_t b = tmpl.find(close, start);
  if (b == std::string::npos) return "";
  std::string raw = tmpl.substr(start, b - start);
  if (raw.find_first_of("{}'\"+") != std::string::npos) return "";
  std::string out;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\\' && i + 1 < raw.size() && raw[i + 1] == 'n') {
      out += '\n';
      ++i;
    } else {
      out += raw[i];
    }
  }
  return out;
}

}  // namespace

// ---- the pre-tokenizer: compiled PCRE2 patterns --------------------------------------------
struct Tokenizer::PreTokenizer {
  std::vector<pcre2_code*> codes;
  pcre2_match_data* match = nullptr;

  explicit PreTokenizer(const std::vector<std::string>& patterns) {
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
  ~PreTokenizer() { release(); }
  void release() {
    for (pcre2_code* c : codes) pcre2_code_free(c);
    codes.clear();
    if (match) pcre2_match_data_free(match);
    match = nullptr;
  }

  // Splits `text` (valid UTF-8) by every pattern in turn.
  std::vector<std::string> split(const std::string& text) const {
    std::vector<std::string> pieces{text};
    for (pcre2_code* code : codes) {
      std::vector<std::string> next;
      for (const std::string& piece : pieces) split_one(code, piece, next);
      pieces.swap(next);
    }
    return pieces;
  }

  void split_one(pcre2_code* code, const std::string& s, std::vector<std::string>& out) const {
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
};

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

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

Tokenizer Tokenizer::assemble(const Spec& spec) {
  const std::string& name = spec.name;
  Tokenizer t;
  t.pieces_ = spec.pieces;
  const int64_t n = static_cast<int64_t>(t.pieces_.size());
  KASCADE_CHECK(n > 0 && n <= std::numeric_limits<int32_t>::max(), name << ": the vocabulary has " << n << " tokens");
  KASCADE_CHECK(spec.special.size() == t.pieces_.size(), name << ": special flags do not cover the vocabulary");

  // Token bytes: special tokens stand for their own text; the others are in GPT-2's alphabet,
  // or (SentencePiece) text with "▁" for spaces and <0xNN> for single bytes.
  const std::vector<uint32_t> b2c = byte_to_codepoint();
  std::unordered_map<uint32_t, uint8_t> c2b;
  for (int b = 0; b < 256; ++b) c2b[b2c[b]] = static_cast<uint8_t>(b);
  t.special_ = spec.special;
  t.bytes_.resize(static_cast<size_t>(n));
  for (int64_t id = 0; id < n; ++id) {
    const std::string& piece = t.pieces_[static_cast<size_t>(id)];
    KASCADE_CHECK(t.piece_to_id_.emplace(piece, static_cast<int32_t>(id)).second,
                  name << ": token " << id << " repeats the text of an earlier token");
    if (t.special_[static_cast<size_t>(id)]) {
      t.bytes_[static_cast<size_t>(id)] = piece;
      if (!piece.empty()) t.special_by_length_.push_back(static_cast<int32_t>(id));
      continue;
    }
    if (spec.sentencepiece) {
      check_utf8(piece, (name + ": token " + std::to_string(id)).c_str());
      const int byte = fallback_byte(piece);
      t.bytes_[static_cast<size_t>(id)] = byte >= 0 ? std::string(1, static_cast<char>(byte)) : replace_all(piece, kMetaspace, " ");
      continue;
    }
    for (uint32_t cp : codepoints(piece)) {
      auto it = c2b.find(cp);
      KASCADE_CHECK(it != c2b.end(), name << ": token " << id << " has a character outside the byte alphabet");
      t.bytes_[static_cast<size_t>(id)] += static_cast<char>(it->second);
    }
  }
  std::stable_sort(t.special_by_length_.begin(), t.special_by_length_.end(), [&](int32_t a, int32_t b) {
    return t.pieces_[static_cast<size_t>(a)].size() > t.pieces_[static_cast<size_t>(b)].size();
  });
  t.byte_token_.assign(256, -1);
  for (int b = 0; b < 256 && spec.sentencepiece; ++b) {
    // Every character outside the vocabulary must be able to fall back to its bytes.
    auto it = t.piece_to_id_.find(fallback_piece(b));
    KASCADE_CHECK(it != t.piece_to_id_.end() && !t.special_[static_cast<size_t>(it->second)],
                  name << ": the byte-fallback token " << fallback_piece(b) << " is not in the vocabulary");
    t.byte_token_[b] = it->second;
  }
  for (int b = 0; b < 256 && !spec.sentencepiece; ++b) {
    std::string piece;
    append_utf8(piece, b2c[b]);
    // Some vocabularies lack a few control bytes; such bytes are dropped, as `tokenizers` does
    // for a BPE model without an unknown token.
    auto it = t.piece_to_id_.find(piece);
    if (it != t.piece_to_id_.end()) t.byte_token_[b] = it->second;
  }

  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [l, r] = spec.merges[rank];
    auto left = t.piece_to_id_.find(l);
    auto right = t.piece_to_id_.find(r);
    auto merged = t.piece_to_id_.find(l + r);
    KASCADE_CHECK(left != t.piece_to_id_.end() && right != t.piece_to_id_.end() && merged != t.piece_to_id_.end(),
                  name << ": merge " << rank << " '" << l << " " << r << "' names a token that is not in the vocabulary");
    const uint64_t key = (static_cast<uint64_t>(left->second) << 32) | static_cast<uint32_t>(right->second);
    t.merges_.emplace(key, Merge{static_cast<int32_t>(rank), merged->second});  // the first (lowest) rank wins
  }
  if (!spec.scores.empty()) {
    // llama.cpp's SentencePiece merge joins any two adjacent symbols whose text is a token, the
    // token of highest score first and the leftmost pair among equal scores. That is BPE with a
    // merge (a, b) for every split of every token into two tokens, ranked by the token's score,
    // equal scores sharing a rank.
    KASCADE_CHECK(spec.scores.size() == t.pieces_.size(), name << ": " << spec.scores.size() << " token scores for "
                                                                << n << " tokens");
    std::vector<double> distinct;
    for (size_t id = 0; id < spec.scores.size(); ++id) {
      KASCADE_CHECK(std::isfinite(spec.scores[id]), name << ": token " << id << " has a non-finite score");
      distinct.push_back(spec.scores[id]);
    }
    std::sort(distinct.begin(), distinct.end(), std::greater<double>());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    for (int64_t id = 0; id < n; ++id) {
      const std::string& piece = t.pieces_[static_cast<size_t>(id)];
      const auto rank = static_cast<int32_t>(
          std::lower_bound(distinct.begin(), distinct.end(), spec.scores[static_cast<size_t>(id)], std::greater<double>()) -
          distinct.begin());
      for (size_t cut = 1; cut < piece.size(); ++cut) {
        if ((static_cast<unsigned char>(piece[cut]) & 0xC0) == 0x80) continue;  // inside a character
        auto left = t.piece_to_id_.find(piece.substr(0, cut));
        auto right = t.piece_to_id_.find(piece.substr(cut));
        if (left == t.piece_to_id_.end() || right == t.piece_to_id_.end()) continue;
        const uint64_t key = (static_cast<uint64_t>(left->second) << 32) | static_cast<uint32_t>(right->second);
        t.merges_.emplace(key, Merge{rank, static_cast<int32_t>(id)});
      }
    }
  }
  t.pre_ = std::make_unique<PreTokenizer>(spec.regexes);
  t.ignore_merges_ = spec.ignore_merges;
  t.nfc_ = spec.nfc;
  t.sentencepiece_ = spec.sentencepiece;
  t.dummy_prefix_ = spec.dummy_prefix;
  t.prefix_unless_space_ = spec.prefix_unless_space;
  t.split_at_metaspace_ = spec.split_at_metaspace;
  t.strip_leading_space_ = spec.strip_leading_space;

  KASCADE_CHECK(spec.bos_id >= -1 && spec.bos_id < n, name << ": bos token id " << spec.bos_id << " is not a token id");
  t.bos_id_ = spec.bos_id;
  t.add_bos_ = spec.add_bos;
  KASCADE_CHECK(!t.add_bos_ || t.bos_id_ >= 0, name << ": BOS is to be added but the model names no BOS token");
  for (int32_t id : spec.stop_ids) {
    KASCADE_CHECK(id >= 0 && id < n, name << ": stop token id " << id << " is not a token id");
    t.stop_ids_.push_back(id);
  }
  // End-of-turn tokens of the supported chat formats, when the vocabulary has them as specials.
  for (const char* text : {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<|eom_id|>"}) {
    const int32_t id = t.find_token(text);
    if (id >= 0 && t.is_special(id)) t.stop_ids_.push_back(id);
  }
  std::sort(t.stop_ids_.begin(), t.stop_ids_.end());
  t.stop_ids_.erase(std::unique(t.stop_ids_.begin(), t.stop_ids_.end()), t.stop_ids_.end());

  const std::string& tmpl = spec.chat_template;
  if (tmpl.find("<|im_start|>") != std::string::npos) {
    t.chat_format_ = ChatFormat::ChatML;
    t.default_system_ = literal_between(tmpl, "<|im_start|>system\n", "<|im_end|>");
    if (t.default_system_.empty()) t.default_system_ = literal_between(tmpl, "<|im_start|>system\\n", "<|im_end|>");
  } else if (tmpl.find("<|start_header_id|>") != std::string::npos) {
    t.chat_format_ = ChatFormat::Llama3;
  } else if (tmpl.find("<<SYS>>") != std::string::npos) {
    t.chat_format_ = ChatFormat::Llama2;
  } else if (tmpl.find("[INST]") != std::string::npos) {
    t.chat_format_ = ChatFormat::Mistral;
  }
  // The [INST] templates write BOS and EOS as text; the model's own EOS is the first stop id given.
  const int32_t eos = spec.stop_ids.empty() ? -1 : spec.stop_ids.front();
  if (t.is_special(t.bos_id_)) t.chat_bos_ = t.pieces_[static_cast<size_t>(t.bos_id_)];
  if (t.is_special(eos)) t.chat_eos_ = t.pieces_[static_cast<size_t>(eos)];
  return t;
}

Tokenizer Tokenizer::from_gguf(const GgufFile& gguf) {
  Spec spec;
  spec.name = gguf.name();
  const std::string& name = spec.name;
  const std::string model = gguf.get_string("tokenizer.ggml.model");
  KASCADE_CHECK(model == "gpt2" || model == "llama",
                name << ": tokenizer.ggml.model '" << model
                     << "' is not supported (supported: gpt2, the byte-level BPE; llama, the SentencePiece-style BPE)");
  spec.sentencepiece = model == "llama";
  spec.pieces = gguf.get_string_array("tokenizer.ggml.tokens");
  const size_t n = spec.pieces.size();
  std::vector<int64_t> types(n, 1);
  if (gguf.has("tokenizer.ggml.token_type")) {
    types = gguf.get_int_array("tokenizer.ggml.token_type");
    KASCADE_CHECK(types.size() == n, name << ": tokenizer.ggml.token_type has " << types.size()
                                          << " entries for " << n << " tokens");
  }
  spec.special.resize(n);
  for (size_t id = 0; id < n; ++id) {
    spec.special[id] = types[id] == kTokenControl || types[id] == kTokenUserDefined || types[id] == kTokenUnknown;
  }

  if (spec.sentencepiece) {
    // llama.cpp's SentencePiece tokenizer: a space before every span of text that starts the text
    // or follows a special token (add_space_prefix, on unless the file says otherwise), merges
    // by score, and a decoder that drops that space again.
    KASCADE_CHECK(gguf.has("tokenizer.ggml.scores"), name << ": a 'llama' tokenizer needs tokenizer.ggml.scores");
    spec.scores = gguf.get_float_array("tokenizer.ggml.scores");
    const bool prefix = !gguf.has("tokenizer.ggml.add_space_prefix") || gguf.get_bool("tokenizer.ggml.add_space_prefix");
    spec.dummy_prefix = prefix ? DummyPrefix::EverySpan : DummyPrefix::None;
    spec.strip_leading_space = prefix;
  }

  const std::vector<std::string> merges = spec.sentencepiece ? std::vector<std::string>()
                                                             : gguf.get_string_array("tokenizer.ggml.merges");
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& m = merges[rank];
    const size_t space = m.find(' ', 1);
    KASCADE_CHECK(space != std::string::npos, name << ": merge " << rank << " '" << m << "' has no space");
    spec.merges.emplace_back(m.substr(0, space), m.substr(space + 1));
  }

  const std::string pre = gguf.has("tokenizer.ggml.pre") ? gguf.get_string("tokenizer.ggml.pre") : "default";
  bool known = spec.sentencepiece;  // no pre-tokenizer: each span is one word
  for (const PreTokenizerKind& kind : pre_tokenizer_kinds()) {
    for (const char* kind_name : kind.names) {
      if (kind_name && pre == kind_name && !spec.sentencepiece) {
        spec.regexes.assign(kind.regexes.begin(), kind.regexes.end());
        spec.ignore_merges = kind.ignore_merges;
        known = true;
      }
    }
  }
  KASCADE_CHECK(known, name << ": tokenizer.ggml.pre '" << pre
                            << "' is not supported (supported: smollm, starcoder, gpt-2, default, "
                               "llama-bpe, llama3, qwen2)");

  auto optional_id = [&](const char* key) -> int32_t {
    if (!gguf.has(key)) return -1;
    const uint64_t id = gguf.get_uint(key);
    KASCADE_CHECK(id < n, name << ": " << key << " " << id << " is not a token id");
    return static_cast<int32_t>(id);
  };
  spec.bos_id = optional_id("tokenizer.ggml.bos_token_id");
  // llama.cpp adds BOS unless told otherwise for SentencePiece vocabularies, not for byte-level ones.
  spec.add_bos = gguf.has("tokenizer.ggml.add_bos_token") ? gguf.get_bool("tokenizer.ggml.add_bos_token")
                                                          : spec.sentencepiece && spec.bos_id >= 0;
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    const int32_t id = optional_id(key);
    if (id >= 0) spec.stop_ids.push_back(id);
  }
  if (gguf.has("tokenizer.chat_template")) spec.chat_template = gguf.get_string("tokenizer.chat_template");
  return assemble(spec);
}

// ---- Hugging Face tokenizer.json ---------------------------------------------------------------
namespace {

using Json = nlohmann::json;

// A required member of a JSON object, or an error naming the file and the path.
const Json& member(const Json& j, const char* key, const std::string& where) {
  KASCADE_CHECK(j.is_object() && j.contains(key), where << ": missing '" << key << "'");
  return j[key];
}

bool flag(const Json& j, const char* key, bool fallback) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  return j[key].get<bool>();
}

// A regex that matches `text` literally (PCRE2's \Q..\E quoting, with \E itself spelled out).
std::string literal_regex(const std::string& text) {
  std::string out = "\\Q";
  for (size_t i = 0; i < text.size(); ++i) {
    if (text.compare(i, 2, "\\E") == 0) {
      out += "\\E\\\\E\\Q";
      ++i;
    } else {
      out += text[i];
    }
  }
  return out + "\\E";
}

// Appends the regexes of a `pre_tokenizer` node; sets *byte_level when a ByteLevel step is seen.
void collect_pre_tokenizer(const Json& node, const std::string& where, std::vector<std::string>& regexes,
                           bool& byte_level) {
  const std::string type = member(node, "type", where).get<std::string>();
  if (type == "Sequence") {
    for (const Json& step : member(node, "pretokenizers", where)) collect_pre_tokenizer(step, where, regexes, byte_level);
  } else if (type == "ByteLevel") {
    KASCADE_CHECK(!flag(node, "add_prefix_space", false),
                  where << ": ByteLevel with add_prefix_space is not supported");
    if (flag(node, "use_regex", true)) regexes.push_back(kGpt2Regex);
    byte_level = true;
  } else if (type == "Split") {
    const Json& pattern = member(node, "pattern", where);
    const std::string behavior = member(node, "behavior", where).get<std::string>();
    KASCADE_CHECK(behavior == "Isolated" && !flag(node, "invert", false),
                  where << ": Split with behavior '" << behavior << "'"
                        << (flag(node, "invert", false) ? " inverted" : "") << " is not supported (supported: Isolated)");
    if (pattern.contains("Regex")) {
      regexes.push_back(pattern["Regex"].get<std::string>());
    } else {
      regexes.push_back(literal_regex(member(pattern, "String", where).get<std::string>()));
    }
  } else if (type == "Digits") {
    regexes.push_back(flag(node, "individual_digits", false) ? "\\p{N}" : "\\p{N}+");
  } else {
    KASCADE_FAIL(where << ": pre_tokenizer '" << type
                       << "' is not supported (supported: ByteLevel, Split, Digits and Sequences of them)");
  }
}

// A token named in tokenizer_config.json: a string or {"content": string}.
std::string token_text(const Json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return "";
}

// An id or a list of ids (eos_token_id in config.json / generation_config.json).
std::vector<int64_t> id_list(const Json& j) {
  std::vector<int64_t> out;
  if (j.is_number_integer()) out.push_back(j.get<int64_t>());
  if (j.is_array()) {
    for (const Json& e : j) {
      if (e.is_number_integer()) out.push_back(e.get<int64_t>());
    }
  }
  return out;
}

Json optional_json_file(const std::string& path) {
  std::ifstream probe(path);
  if (!probe.good()) return Json();
  return parse_json_strict(read_text_file(path), path);
}

}  // namespace

Tokenizer Tokenizer::from_hf_directory(const std::string& dir) {
  Spec spec;
  const std::string path = dir + "/tokenizer.json";
  spec.name = path;
  const Json doc = parse_json_strict(read_text_file(path), path);
  try {
    KASCADE_CHECK(doc.is_object(), path << ": not a JSON object");
    const Json& model = member(doc, "model", path);
    const std::string type = model.value("type", std::string("BPE"));
    KASCADE_CHECK(type == "BPE", path << ": model type '" << type << "' is not supported (supported: BPE)");
    // byte_fallback marks the SentencePiece-style BPE of Llama 2 and Mistral.
    spec.sentencepiece = flag(model, "byte_fallback", false);

    // Normalizers: NFC (Qwen; accepted for text that is already NFC, see check_nfc_stable), and
    // for SentencePiece-style BPE the Llama 2 pair Prepend("▁") + Replace(" ", "▁").
    const Json& normalizer = member(doc, "normalizer", path);
    bool spaces_to_metaspace = false;
    std::vector<Json> normalizers;
    if (normalizer.is_object() && normalizer.value("type", std::string()) == "Sequence") {
      for (const Json& n : member(normalizer, "normalizers", path)) normalizers.push_back(n);
    } else if (!normalizer.is_null()) {
      normalizers.push_back(normalizer);
    }
    for (const Json& n : normalizers) {
      const std::string ntype = n.value("type", std::string("?"));
      if (ntype == "NFC") {
        spec.nfc = true;
      } else if (spec.sentencepiece && ntype == "Prepend" && n.value("prepend", std::string()) == kMetaspace) {
        spec.dummy_prefix = DummyPrefix::EverySpan;  // tokenizers prepends to every span between added tokens
      } else if (spec.sentencepiece && ntype == "Replace" && n.contains("pattern") &&
                 n["pattern"].value("String", std::string()) == " " && n.value("content", std::string()) == kMetaspace) {
        spaces_to_metaspace = true;
      } else {
        KASCADE_FAIL(path << ": normalizer '" << ntype
                          << "' is not supported (supported: none, NFC for text already in NFC; with byte_fallback "
                             "also Prepend(\"\u2581\") and Replace(\" \", \"\u2581\"))");
      }
    }
    KASCADE_CHECK(!model.contains("dropout") || model["dropout"].is_null(), path << ": BPE dropout is not supported");
    for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      KASCADE_CHECK(!model.contains(affix) || model[affix].is_null() || model[affix].get<std::string>().empty(),
                    path << ": BPE " << affix << " is not supported");
    }
    spec.ignore_merges = flag(model, "ignore_merges", false);

    // Ids: the vocabulary, then the added tokens (which may repeat a vocabulary entry's id).
    const Json& vocab = member(model, "vocab", path);
    KASCADE_CHECK(vocab.is_object(), path << ": model.vocab is not an object");
    const Json& added = doc.contains("added_tokens") && !doc["added_tokens"].is_null() ? doc["added_tokens"] : Json::array();
    int64_t size = 0;
    for (const auto& [piece, id] : vocab.items()) {
      KASCADE_CHECK(id.is_number_unsigned() && id.get<uint64_t>() < (1u << 30),
                    path << ": vocabulary entry '" << piece << "' has a bad id " << id.dump());
      size = std::max<int64_t>(size, id.get<int64_t>() + 1);
    }
    for (const Json& a : added) {
      const Json& id = member(a, "id", path);
      KASCADE_CHECK(id.is_number_unsigned() && id.get<uint64_t>() < (1u << 30), path << ": added token id " << id.dump() << " is bad");
      size = std::max<int64_t>(size, id.get<int64_t>() + 1);
    }
    std::vector<uint8_t> seen(static_cast<size_t>(size), 0);
    spec.pieces.resize(static_cast<size_t>(size));
    spec.special.assign(static_cast<size_t>(size), 0);
    for (const auto& [piece, id] : vocab.items()) {
      const size_t i = id.get<size_t>();
      KASCADE_CHECK(!seen[i], path << ": id " << i << " is given to two vocabulary entries");
      spec.pieces[i] = piece;
      seen[i] = 1;
    }
    for (const Json& a : added) {
      const size_t i = a["id"].get<size_t>();
      const std::string content = member(a, "content", path).get<std::string>();
      KASCADE_CHECK(!flag(a, "lstrip", false) && !flag(a, "rstrip", false) && !flag(a, "single_word", false),
                    path << ": added token '" << content << "' uses lstrip/rstrip/single_word (not supported)");
      KASCADE_CHECK(!seen[i] || spec.pieces[i] == content,
                    path << ": added token '" << content << "' takes id " << i << " of '" << spec.pieces[i] << "'");
      // Every added token is matched in the text before pre-tokenization, and decodes to its
      // content, as `tokenizers` does (the GGUF path treats control and user-defined alike).
      spec.pieces[i] = content;
      spec.special[i] = 1;
      seen[i] = 1;
    }
    for (int64_t i = 0; i < size; ++i) {
      KASCADE_CHECK(seen[static_cast<size_t>(i)], path << ": token id " << i << " has no vocabulary entry");
    }

    for (const Json& m : member(model, "merges", path)) {
      if (m.is_string()) {  // "left right"
        const std::string text = m.get<std::string>();
        const size_t space = text.find(' ', 1);
        KASCADE_CHECK(space != std::string::npos, path << ": merge '" << text << "' has no space");
        spec.merges.emplace_back(text.substr(0, space), text.substr(space + 1));
      } else {  // ["left", "right"]
        KASCADE_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                      path << ": merge " << m.dump() << " is neither \"a b\" nor [a, b]");
        spec.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      }
    }

    const Json& pre = member(doc, "pre_tokenizer", path);
    const Json& decoder = member(doc, "decoder", path);
    if (spec.sentencepiece) {
      // Spaces become "▁" in the normalizer or in a Metaspace pre-tokenizer, which may also add
      // the dummy prefix ("first": only before the span that starts the text) and split words.
      if (!pre.is_null()) {
        const std::string ptype = pre.value("type", std::string("?"));
        KASCADE_CHECK(ptype == "Metaspace", path << ": pre_tokenizer '" << ptype
                                                 << "' is not supported with byte_fallback (supported: none, Metaspace)");
        KASCADE_CHECK(pre.value("replacement", kMetaspace) == kMetaspace,
                      path << ": Metaspace replacement other than \"\u2581\" is not supported");
        const std::string scheme = pre.contains("prepend_scheme")
                                       ? pre["prepend_scheme"].get<std::string>()
                                       : (flag(pre, "add_prefix_space", true) ? "always" : "never");
        KASCADE_CHECK(scheme == "always" || scheme == "first" || scheme == "never",
                      path << ": Metaspace prepend_scheme '" << scheme << "' is not supported");
        KASCADE_CHECK(scheme == "never" || spec.dummy_prefix == DummyPrefix::None,
                      path << ": both the normalizer and the Metaspace pre-tokenizer add a dummy prefix");
        if (scheme != "never") {
          spec.dummy_prefix = scheme == "first" ? DummyPrefix::FirstSpan : DummyPrefix::EverySpan;
          spec.prefix_unless_space = true;
        }
        spec.split_at_metaspace = flag(pre, "split", true);
        spaces_to_metaspace = true;
      }
      KASCADE_CHECK(spaces_to_metaspace, path << ": byte_fallback BPE without Replace(\" \", \"\u2581\") or a Metaspace "
                                                 "pre-tokenizer is not supported");
      // Decoders: Metaspace, or the Llama 2 sequence Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0).
      std::vector<Json> steps;
      if (decoder.is_object() && decoder.value("type", std::string()) == "Sequence") {
        for (const Json& d : member(decoder, "decoders", path)) steps.push_back(d);
      } else if (!decoder.is_null()) {
        steps.push_back(decoder);
      }
      bool spaces_back = false, bytes_back = false;
      for (const Json& d : steps) {
        const std::string dtype = d.value("type", std::string("?"));
        if (dtype == "Metaspace") {
          const std::string scheme = d.contains("prepend_scheme")
                                         ? d["prepend_scheme"].get<std::string>()
                                         : (flag(d, "add_prefix_space", true) ? "always" : "never");
          spec.strip_leading_space = scheme != "never";
          spaces_back = true;
        } else if (dtype == "Replace" && d.contains("pattern") && d["pattern"].value("String", std::string()) == kMetaspace &&
                   d.value("content", std::string()) == " ") {
          spaces_back = true;
        } else if (dtype == "ByteFallback") {
          bytes_back = true;
        } else if (dtype == "Strip" && d.value("content", std::string()) == " " && d.value("start", 0) <= 1 &&
                   d.value("stop", 0) == 0) {
          spec.strip_leading_space = d.value("start", 0) == 1;
        } else {
          KASCADE_CHECK(dtype == "Fuse", path << ": decoder '" << dtype
                                             << "' is not supported with byte_fallback (supported: Metaspace, Replace(\"\u2581\", \" \"), "
                                                "ByteFallback, Fuse, Strip(\" \", 0 or 1, 0))");
        }
      }
      KASCADE_CHECK(spaces_back && bytes_back, path << ": the decoder does not turn \"\u2581\" back into spaces and <0xNN> "
                                                       "tokens into bytes (supported: Metaspace or Replace + ByteFallback)");
    } else {
      bool byte_level = false;
      if (!pre.is_null()) collect_pre_tokenizer(pre, path, spec.regexes, byte_level);
      KASCADE_CHECK(byte_level, path << ": the pre_tokenizer has no ByteLevel step: not a byte-level BPE tokenizer");
      KASCADE_CHECK(decoder.is_null() || decoder.value("type", std::string()) == "ByteLevel",
                    path << ": decoder '" << decoder.value("type", std::string("?")) << "' is not supported (supported: ByteLevel)");
    }

    // BOS: a TemplateProcessing post-processor that starts with a special token adds it.
    std::string bos_text;
    const Json& post = member(doc, "post_processor", path);
    std::vector<Json> processors;
    if (!post.is_null()) {
      if (post.value("type", std::string()) == "Sequence") {
        for (const Json& p : member(post, "processors", path)) processors.push_back(p);
      } else {
        processors.push_back(post);
      }
    }
    for (const Json& p : processors) {
      const std::string ptype = p.value("type", std::string());
      if (ptype == "ByteLevel") continue;
      KASCADE_CHECK(ptype == "TemplateProcessing", path << ": post_processor '" << ptype
                                                        << "' is not supported (supported: TemplateProcessing, ByteLevel)");
      const Json& single = member(p, "single", path);
      if (!single.empty() && single[0].contains("SpecialToken")) {
        bos_text = member(single[0]["SpecialToken"], "id", path).get<std::string>();
        spec.add_bos = true;
      }
    }

    const Json config = optional_json_file(dir + "/tokenizer_config.json");
    const Json generation = optional_json_file(dir + "/generation_config.json");
    const Json model_config = optional_json_file(dir + "/config.json");
    std::unordered_map<std::string, int32_t> id_of;
    for (size_t i = 0; i < spec.pieces.size(); ++i) id_of.emplace(spec.pieces[i], static_cast<int32_t>(i));
    auto lookup = [&](const std::string& text, const char* what) {
      auto it = id_of.find(text);
      KASCADE_CHECK(it != id_of.end(), dir << ": " << what << " '" << text << "' is not in the vocabulary");
      return it->second;
    };
    if (config.is_object()) {
      if (config.contains("bos_token") && !token_text(config["bos_token"]).empty() && bos_text.empty()) {
        bos_text = token_text(config["bos_token"]);
      }
      if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean()) {
        spec.add_bos = spec.add_bos || config["add_bos_token"].get<bool>();
      }
      if (config.contains("eos_token") && !token_text(config["eos_token"]).empty()) {
        spec.stop_ids.push_back(lookup(token_text(config["eos_token"]), "eos_token"));
      }
      if (config.contains("chat_template")) {
        const Json& tmpl = config["chat_template"];
        if (tmpl.is_string()) spec.chat_template = tmpl.get<std::string>();
        // A list of named templates: the default one (the first when none is named so).
        for (const Json& named : tmpl.is_array() ? tmpl : Json::array()) {
          if (spec.chat_template.empty() || named.value("name", std::string()) == "default") {
            spec.chat_template = named.value("template", std::string());
          }
        }
      }
    }
    if (spec.chat_template.empty()) {  // newer transformers save the template as its own file
      std::ifstream jinja(dir + "/chat_template.jinja");
      if (jinja.good()) spec.chat_template = read_text_file(dir + "/chat_template.jinja");
    }
    if (!bos_text.empty()) {
      spec.bos_id = lookup(bos_text, "bos_token");
    } else if (model_config.is_object() && model_config.contains("bos_token_id")) {
      const std::vector<int64_t> ids = id_list(model_config["bos_token_id"]);
      if (!ids.empty()) spec.bos_id = static_cast<int32_t>(ids[0]);
    }
    for (const Json* j : {&generation, &model_config}) {
      if (j->is_object() && j->contains("eos_token_id")) {
        for (int64_t id : id_list((*j)["eos_token_id"])) spec.stop_ids.push_back(static_cast<int32_t>(id));
      }
    }
  } catch (const Json::exception& e) {  // a value of the wrong JSON type somewhere above
    KASCADE_FAIL(path << ": unexpected JSON value: " << e.what());
  }
  return assemble(spec);
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && special_[static_cast<size_t>(id)] != 0;
}

bool Tokenizer::is_stop(int32_t id) const { return std::binary_search(stop_ids_.begin(), stop_ids_.end(), id); }

int32_t Tokenizer::find_token(const std::string& text) const {
  auto it = piece_to_id_.find(text);
  return it == piece_to_id_.end() ? -1 : it->second;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  KASCADE_CHECK(id >= 0 && id < vocab_size(), "tokenizer: token id " << id << " is out of range [0, " << vocab_size() << ")");
  return bytes_[static_cast<size_t>(id)];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id);
  if (strip_leading_space_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool parse_special) const {
  check_utf8(text, "tokenizer input");
  if (nfc_) check_nfc_stable(text);
  std::vector<int32_t> out;
  if (!parse_special || special_by_length_.empty()) {
    encode_span(text, wants_dummy_prefix(/*at_text_start=*/true), out);
    return out;
  }
  // Split out special-token strings (leftmost, then longest), encode the text between them.
  size_t span_start = 0;
  for (size_t i = 0; i < text.size();) {
    int32_t found = -1;
    for (int32_t id : special_by_length_) {
      const std::string& s = pieces_[static_cast<size_t>(id)];
      if (s[0] == text[i] && text.compare(i, s.size(), s) == 0) {
        found = id;
        break;
      }
    }
    if (found < 0) {
      ++i;
      continue;
    }
    if (i > span_start) encode_span(text.substr(span_start, i - span_start), wants_dummy_prefix(span_start == 0), out);
    out.push_back(found);
    i += pieces_[static_cast<size_t>(found)].size();
    span_start = i;
  }
  if (span_start < text.size()) encode_span(text.substr(span_start), wants_dummy_prefix(span_start == 0), out);
  return out;
}

std::vector<int32_t> Tokenizer::encode_continuation(const std::string& text) const {
  check_utf8(text, "tokenizer input");
  if (nfc_) check_nfc_stable(text);
  std::vector<int32_t> out;
  encode_span(text, /*dummy_prefix=*/false, out);
  return out;
}

bool Tokenizer::wants_dummy_prefix(bool at_text_start) const {
  return dummy_prefix_ == DummyPrefix::EverySpan || (dummy_prefix_ == DummyPrefix::FirstSpan && at_text_start);
}

void Tokenizer::encode_span(const std::string& span, bool dummy_prefix, std::vector<int32_t>& out) const {
  if (!sentencepiece_) {
    for (const std::string& word : pre_->split(span)) bpe_word(word, out);
    return;
  }
  if (span.empty()) return;
  std::string text = replace_all(span, " ", kMetaspace);
  if (dummy_prefix && !(prefix_unless_space_ && text.compare(0, kMetaspace.size(), kMetaspace) == 0)) {
    text.insert(0, kMetaspace);
  }
  if (!split_at_metaspace_) {
    bpe_word(text, out);
    return;
  }
  // Metaspace split: every "▁" begins a new word (tokenizers' MergedWithNext).
  size_t word_start = 0;
  for (size_t hit = text.find(kMetaspace, 1); hit != std::string::npos; hit = text.find(kMetaspace, hit + 1)) {
    if (hit == word_start) continue;
    bpe_word(text.substr(word_start, hit - word_start), out);
    word_start = hit;
  }
  bpe_word(text.substr(word_start), out);
}

void Tokenizer::bpe_word(const std::string& word, std::vector<int32_t>& out) const {
  static const std::vector<uint32_t> b2c = byte_to_codepoint();
  if (ignore_merges_) {  // a word that is a token is that token, whatever the merges say
    std::string piece;
    if (sentencepiece_) {
      piece = word;
    } else {
      for (unsigned char c : word) append_utf8(piece, b2c[c]);
    }
    const int32_t id = find_token(piece);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  if (sentencepiece_) {
    // One symbol per character in the vocabulary; the bytes of any other character fall back to
    // their <0xNN> tokens.
    for (size_t i = 0; i < word.size();) {
      const size_t len = utf8_sequence_length(word, i);
      const int32_t id = find_token(word.substr(i, len));
      if (id >= 0 && !is_special(id)) {
        symbols.push_back(id);
      } else {
        for (size_t k = 0; k < len; ++k) symbols.push_back(byte_token_[static_cast<unsigned char>(word[i + k])]);
      }
      i += len;
    }
  } else {
    for (unsigned char c : word) {
      if (byte_token_[c] >= 0) symbols.push_back(byte_token_[c]);
    }
  }
  merge_symbols(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
}

void Tokenizer::merge_symbols(std::vector<int32_t>& symbols) const {
  // Repeatedly merge the adjacent pair of lowest rank, leftmost among equal ranks: a heap of
  // candidate pairs over a linked list of symbols, so that a long word costs n log n, not n^2.
  // A popped candidate whose symbols have changed since it was pushed is skipped.
  const int n = static_cast<int>(symbols.size());
  if (n < 2) return;
  std::vector<int> next(static_cast<size_t>(n)), prev(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    next[static_cast<size_t>(i)] = i + 1 < n ? i + 1 : -1;
    prev[static_cast<size_t>(i)] = i - 1;
  }
  using Candidate = std::tuple<int32_t, int, int32_t, int32_t>;  // rank, left position, left id, right id
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto consider = [&](int left) {
    if (left < 0) return;
    const int right = next[static_cast<size_t>(left)];
    if (right < 0) return;
    const int32_t a = symbols[static_cast<size_t>(left)], b = symbols[static_cast<size_t>(right)];
    auto it = merges_.find((static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b));
    if (it != merges_.end()) heap.emplace(it->second.rank, left, a, b);
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  constexpr int32_t kRemoved = -1;
  while (!heap.empty()) {
    const int left = std::get<1>(heap.top());
    const int32_t a = std::get<2>(heap.top()), b = std::get<3>(heap.top());
    heap.pop();
    const int right = next[static_cast<size_t>(left)];
    if (symbols[static_cast<size_t>(left)] != a || right < 0 || symbols[static_cast<size_t>(right)] != b) continue;
    const auto key = (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b);
    symbols[static_cast<size_t>(left)] = merges_.at(key).result;
    symbols[static_cast<size_t>(right)] = kRemoved;
    next[static_cast<size_t>(left)] = next[static_cast<size_t>(right)];
    if (next[static_cast<size_t>(right)] >= 0) prev[static_cast<size_t>(next[static_cast<size_t>(right)])] = left;
    consider(prev[static_cast<size_t>(left)]);
    consider(left);
  }
  symbols.erase(std::remove(symbols.begin(), symbols.end(), kRemoved), symbols.end());
}

std::string Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  KASCADE_CHECK(chat_format_ != ChatFormat::None,
                "this model has no supported chat template (supported: ChatML, Llama 3, Llama 2, Mistral)");
  std::string out;
  switch (chat_format_) {
    case ChatFormat::None:
      break;
    case ChatFormat::ChatML:
      if (!default_system_.empty() && (messages.empty() || messages[0].role != "system")) {
        out += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
      }
      for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case ChatFormat::Llama3:
      out += "<|begin_of_text|>";
      for (const ChatMessage& m : messages) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    case ChatFormat::Llama2:
    case ChatFormat::Mistral:
      // The [INST] templates: an optional leading system message joins the first user turn,
      // then user and assistant turns alternate. The prompt always ends after "[/INST]", so
      // there is no separate generation prompt.
      return inst_prompt(messages);
  }
  return out;
}

std::string Tokenizer::inst_prompt(const std::vector<ChatMessage>& messages) const {
  const bool llama2 = chat_format_ == ChatFormat::Llama2;
  KASCADE_CHECK(!chat_bos_.empty() && !chat_eos_.empty(),
                "chat: the model's [INST] template needs special BOS and EOS tokens, and this model "
                    << (chat_bos_.empty() ? "has no special BOS token" : "has no special EOS token"));
  auto trim = [](const std::string& s) {  // Jinja's strip()
    const size_t a = s.find_first_not_of(" \t\n\r\f\v");
    if (a == std::string::npos) return std::string();
    return s.substr(a, s.find_last_not_of(" \t\n\r\f\v") - a + 1);
  };
  size_t first = 0;
  std::string system;
  if (!messages.empty() && messages[0].role == "system") {
    system = messages[0].content;
    first = 1;
  }
  std::string out = llama2 ? "" : chat_bos_;
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool user_turn = (i - first) % 2 == 0;
    KASCADE_CHECK(m.role == (user_turn ? "user" : "assistant"),
                  "chat: message " << i + 1 << " has role '" << m.role << "' where the [INST] template expects '"
                                   << (user_turn ? "user" : "assistant") << "' (a system message may only come first)");
    std::string content = m.content;
    if (i == first && first == 1) {
      content = llama2 ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content : system + "\n\n" + content;
    }
    if (user_turn) {
      out += (llama2 ? chat_bos_ : "") + "[INST] " + (llama2 ? trim(content) : content) + " [/INST]";
    } else {
      out += llama2 ? " " + trim(content) + " " + chat_eos_ : content + chat_eos_;
    }
  }
  return out;
}

// ---- UTF-8 helpers and streaming ------------------------------------------------------------
size_t complete_utf8_prefix(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const size_t len = utf8_sequence_length(s, i);
    if (len == 0) break;
    i += len;
  }
  return i;
}

void check_utf8(const std::string& s, const char* what) {
  const size_t ok = complete_utf8_prefix(s);
  KASCADE_CHECK(ok == s.size(), what << ": invalid UTF-8 at byte " << ok);
}

std::string TextStream::push(int32_t id) {
  if (tok_.is_special(id)) return "";
  pending_ += tok_.token_bytes(id);
  std::string out;
  // Emit every complete character; an invalid byte (not just an unfinished one) becomes U+FFFD.
  for (;;) {
    const size_t ok = complete_utf8_prefix(pending_);
    out += pending_.substr(0, ok);
    pending_.erase(0, ok);
    if (pending_.empty()) break;
    const auto lead = static_cast<unsigned char>(pending_[0]);
    const size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    bool could_complete = want > 1 && pending_.size() < want && lead < 0xF8;
    for (size_t k = 1; could_complete && k < pending_.size(); ++k) {
      could_complete = (static_cast<unsigned char>(pending_[k]) & 0xC0) == 0x80;
    }
    if (could_complete) break;
    out += "\xEF\xBF\xBD";
    pending_.erase(0, 1);
  }
  return out;
}

std::string TextStream::finish() {
  std::string out = pending_.empty() ? "" : "\xEF\xBF\xBD";
  pending_.clear();
  return out;
}

}  // namespace kascade::engine
