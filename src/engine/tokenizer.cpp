// BPE tokenizer (see tokenizer.h): a tokenizer assembled from its Spec (whichever file it was
// loaded from), token lookups, the special-token split of encode() and decode(). Loading:
// tokenizer_load_gguf.cpp, tokenizer_load_hf.cpp; pre-tokenizer: tokenizer_pretokenize.cpp;
// merges: tokenizer_bpe.cpp; chat templates: tokenizer_chat.cpp; UTF-8: tokenizer_utf8.cpp.
#include "tokenizer_internal.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <unordered_map>

#include "kascade/error.h"

namespace kascade::engine {

using tokenizer_detail::append_utf8;
using tokenizer_detail::byte_to_codepoint;
using tokenizer_detail::check_nfc_stable;
using tokenizer_detail::codepoints;
using tokenizer_detail::kMetaspace;
using tokenizer_detail::literal_between;

namespace {

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

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

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

}  // namespace kascade::engine
