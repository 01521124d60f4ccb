// Byte-level BPE tokenizer (see tokenizer.h): special-token split, PCRE2 pre-tokenizer,
// GPT-2 byte alphabet, rank-ordered merges; chat templates of the ChatML and Llama 3 families.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "kascade/engine/tokenizer.h"

#include <pcre2.h>

#include <algorithm>
#include <limits>

#include "kascade/engine/gguf.h"
#include "kascade/error.h"

namespace kascade::engine {

namespace {

// GGUF token types (tokenizer.ggml.token_type).
constexpr int64_t kTokenControl = 3;
constexpr int64_t kTokenUserDefined = 4;

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

  explicit PreTokenizer(const std::vector<const char*>& patterns) {
    for (const char* p : patterns) {
      int err = 0;
      PCRE2_SIZE err_offset = 0;
      pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p), PCRE2_ZERO_TERMINATED,
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

Tokenizer Tokenizer::from_gguf(const GgufFile& gguf) {
  const std::string& name = gguf.name();
  const std::string model = gguf.get_string("tokenizer.ggml.model");
  KASCADE_CHECK(model == "gpt2", name << ": tokenizer.ggml.model '" << model
                                      << "' is not supported (supported: gpt2, the byte-level BPE)");
  Tokenizer t;
  t.pieces_ = gguf.get_string_array("tokenizer.ggml.tokens");
  const int64_t n = static_cast<int64_t>(t.pieces_.size());
  KASCADE_CHECK(n > 0 && n <= std::numeric_limits<int32_t>::max(), name << ": tokenizer.ggml.tokens has " << n << " tokens");
  std::vector<int64_t> types(static_cast<size_t>(n), 1);
  if (gguf.has("tokenizer.ggml.token_type")) {
    types = gguf.get_int_array("tokenizer.ggml.token_type");
    KASCADE_CHECK(static_cast<int64_t>(types.size()) == n, name << ": tokenizer.ggml.token_type has " << types.size()
                                                                << " entries for " << n << " tokens");
  }

  // Token bytes: special tokens stand for their own text; the others are in GPT-2's alphabet.
  const std::vector<uint32_t> b2c = byte_to_codepoint();
  std::unordered_map<uint32_t, uint8_t> c2b;
  for (int b = 0; b < 256; ++b) c2b[b2c[b]] = static_cast<uint8_t>(b);
  t.special_.assign(static_cast<size_t>(n), 0);
  t.bytes_.resize(static_cast<size_t>(n));
  for (int64_t id = 0; id < n; ++id) {
    const std::string& piece = t.pieces_[static_cast<size_t>(id)];
    KASCADE_CHECK(t.piece_to_id_.emplace(piece, static_cast<int32_t>(id)).second,
                  name << ": token " << id << " repeats the text of an earlier token");
    if (types[static_cast<size_t>(id)] == kTokenControl || types[static_cast<size_t>(id)] == kTokenUserDefined) {
      t.special_[static_cast<size_t>(id)] = 1;
      t.bytes_[static_cast<size_t>(id)] = piece;
      if (!piece.empty()) t.special_by_length_.push_back(static_cast<int32_t>(id));
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
  for (int b = 0; b < 256; ++b) {
    std::string piece;
    append_utf8(piece, b2c[b]);
    // Some vocabularies lack a few control bytes; such bytes are dropped, as `tokenizers` does
    // for a BPE model without an unknown token.
    auto it = t.piece_to_id_.find(piece);
    if (it != t.piece_to_id_.end()) t.byte_token_[b] = it->second;
  }

  const std::vector<std::string> merges = gguf.get_string_array("tokenizer.ggml.merges");
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& m = merges[rank];
    const size_t space = m.find(' ', 1);
    KASCADE_CHECK(space != std::string::npos, name << ": merge " << rank << " '" << m << "' has no space");
    auto left = t.piece_to_id_.find(m.substr(0, space));
    auto right = t.piece_to_id_.find(m.substr(space + 1));
    auto merged = t.piece_to_id_.find(m.substr(0, space) + m.substr(space + 1));
    KASCADE_CHECK(left != t.piece_to_id_.end() && right != t.piece_to_id_.end() && merged != t.piece_to_id_.end(),
                  name << ": merge " << rank << " '" << m << "' names a token that is not in the vocabulary");
    const uint64_t key = (static_cast<uint64_t>(left->second) << 32) | static_cast<uint32_t>(right->second);
    t.merge_rank_.emplace(key, static_cast<int32_t>(rank));  // the first (lowest) rank wins
  }

  const std::string pre = gguf.has("tokenizer.ggml.pre") ? gguf.get_string("tokenizer.ggml.pre") : "default";
  for (const PreTokenizerKind& kind : pre_tokenizer_kinds()) {
    for (const char* kind_name : kind.names) {
      if (kind_name && pre == kind_name) {
        t.pre_ = std::make_unique<PreTokenizer>(kind.regexes);
        t.ignore_merges_ = kind.ignore_merges;
      }
    }
  }
  KASCADE_CHECK(t.pre_ != nullptr, name << ": tokenizer.ggml.pre '" << pre
                                        << "' is not supported (supported: smollm, starcoder, gpt-2, default, "
                                           "llama-bpe, llama3, qwen2)");

  auto optional_id = [&](const char* key) -> int32_t {
    if (!gguf.has(key)) return -1;
    const uint64_t id = gguf.get_uint(key);
    KASCADE_CHECK(id < static_cast<uint64_t>(n), name << ": " << key << " " << id << " is not a token id");
    return static_cast<int32_t>(id);
  };
  t.bos_id_ = optional_id("tokenizer.ggml.bos_token_id");
  t.add_bos_ = gguf.has("tokenizer.ggml.add_bos_token") && gguf.get_bool("tokenizer.ggml.add_bos_token");
  KASCADE_CHECK(!t.add_bos_ || t.bos_id_ >= 0, name << ": add_bos_token is set but bos_token_id is missing");
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    const int32_t id = optional_id(key);
    if (id >= 0) t.stop_ids_.push_back(id);
  }
  // End-of-turn tokens of the supported chat formats, when the vocabulary has them as specials.
  for (const char* text : {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<|eom_id|>"}) {
    const int32_t id = t.find_token(text);
    if (id >= 0 && t.is_special(id)) t.stop_ids_.push_back(id);
  }
  std::sort(t.stop_ids_.begin(), t.stop_ids_.end());
  t.stop_ids_.erase(std::unique(t.stop_ids_.begin(), t.stop_ids_.end()), t.stop_ids_.end());

  if (gguf.has("tokenizer.chat_template")) {
    const std::string& tmpl = gguf.get_string("tokenizer.chat_template");
    if (tmpl.find("<|im_start|>") != std::string::npos) {
      t.chat_format_ = ChatFormat::ChatML;
      t.default_system_ = literal_between(tmpl, "<|im_start|>system\n", "<|im_end|>");
      if (t.default_system_.empty()) t.default_system_ = literal_between(tmpl, "<|im_start|>system\\n", "<|im_end|>");
    } else if (tmpl.find("<|start_header_id|>") != std::string::npos) {
      t.chat_format_ = ChatFormat::Llama3;
    }
  }
  return t;
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
  return out;
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool parse_special) const {
  check_utf8(text, "tokenizer input");
  std::vector<int32_t> out;
  if (!parse_special || special_by_length_.empty()) {
    encode_span(text, out);
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
    if (i > span_start) encode_span(text.substr(span_start, i - span_start), out);
    out.push_back(found);
    i += pieces_[static_cast<size_t>(found)].size();
    span_start = i;
  }
  if (span_start < text.size()) encode_span(text.substr(span_start), out);
  return out;
}

void Tokenizer::encode_span(const std::string& span, std::vector<int32_t>& out) const {
  for (const std::string& word : pre_->split(span)) bpe_word(word, out);
}

void Tokenizer::bpe_word(const std::string& word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    static const std::vector<uint32_t> b2c = byte_to_codepoint();
    std::string piece;
    for (unsigned char c : word) append_utf8(piece, b2c[c]);
    const int32_t id = find_token(piece);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  for (unsigned char c : word) {
    if (byte_token_[c] >= 0) symbols.push_back(byte_token_[c]);
  }
  // Repeatedly merge the adjacent pair of lowest rank (leftmost among equals).
  while (symbols.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max();
    size_t best = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const uint64_t key = (static_cast<uint64_t>(symbols[i]) << 32) | static_cast<uint32_t>(symbols[i + 1]);
      auto it = merge_rank_.find(key);
      if (it != merge_rank_.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == std::numeric_limits<int32_t>::max()) break;
    const std::string merged = pieces_[static_cast<size_t>(symbols[best])] + pieces_[static_cast<size_t>(symbols[best + 1])];
    symbols[best] = piece_to_id_.at(merged);
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
}

std::string Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  KASCADE_CHECK(chat_format_ != ChatFormat::None, "this model has no supported chat template (supported: ChatML, Llama 3)");
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
