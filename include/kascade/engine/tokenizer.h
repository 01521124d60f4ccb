// kascade/engine/tokenizer.h — the BPE tokenizers of the supported model families, built from a
// GGUF file's metadata (tokenizer.ggml.*) or a Hugging Face directory's tokenizer.json, and the
// chat templates of those families. One implementation, two ways of turning text into symbols:
//
//  - Byte-level BPE (GPT-2 style: SmolLM2, Llama 3, Qwen; GGUF tokenizer.ggml.model "gpt2"):
//    each span is split by the family's pre-tokenizer regexes (PCRE2, Unicode properties),
//    every piece is mapped byte by byte to GPT-2's printable alphabet and merged by rank.
//    Supported pre-tokenizers (tokenizer.ggml.pre): smollm / starcoder (digits split one by
//    one, then the GPT-2 regex), gpt-2 / default, llama-bpe / llama3, qwen2.
//  - SentencePiece-style BPE (Llama 2, Mistral; GGUF tokenizer.ggml.model "llama"): spaces
//    become U+2581 "▁", a dummy-prefix "▁" is prepended to each span as the model says, the
//    span's characters are merged (by merge rank from tokenizer.json, or by highest score from
//    GGUF, as llama.cpp's SentencePiece merge does) and characters that are not in the
//    vocabulary fall back to their bytes' <0xNN> tokens. Decoding turns "▁" back into spaces,
//    reassembles <0xNN> bytes and drops one leading space when the model's decoder does.
//
// In both, special (control, user-defined, unknown) tokens are matched in the text first,
// leftmost then longest. Text must be valid UTF-8.
//
//   auto tok = kascade::engine::Tokenizer::from_gguf(gguf);   // or ::from_hf_directory(dir)
//   std::string prompt = tok.apply_chat_template({{"user", "Hi"}}, /*add_generation_prompt=*/true);
//   std::vector<int32_t> ids = tok.encode(prompt);          // special tokens recognised
//   kascade::engine::TextStream stream(tok);
//   std::cout << stream.push(next_id);                       // whole UTF-8 characters only
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace kascade::engine {

class GgufFile;

struct ChatMessage {
  std::string role;     // "system" | "user" | "assistant"
  std::string content;
};

// Llama2: "<s>[INST] <<SYS>>\n...\n<</SYS>>\n\nuser [/INST] answer </s>" (a BOS per turn);
// Mistral: "<s>[INST] user [/INST]answer</s>" (one BOS; a system message joins the first user turn).
enum class ChatFormat { None, ChatML, Llama3, Llama2, Mistral };

class Tokenizer {
 public:
  static Tokenizer from_gguf(const GgufFile& gguf);
  // A Hugging Face model directory: tokenizer.json (BPE with a ByteLevel pre-tokenizer, optionally
  // after Split/Digits steps; or SentencePiece-style BPE with byte_fallback, the normalizer
  // Prepend("▁") + Replace(" ", "▁") or a Metaspace pre-tokenizer, and a Replace/ByteFallback/
  // Fuse/Strip or Metaspace decoder; added tokens; merges as "a b" or [a, b]), and when present
  // tokenizer_config.json (bos/eos tokens, add_bos_token, chat_template), chat_template.jinja,
  // generation_config.json and config.json (eos_token_id: stop tokens). An NFC normalizer is
  // accepted; encode() then refuses text with characters that NFC could change (no Unicode
  // normalization is implemented), naming the first one.
  static Tokenizer from_hf_directory(const std::string& dir);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Token ids of `text`; with parse_special, special-token strings in the text become their ids.
  std::vector<int32_t> encode(const std::string& text, bool parse_special = true) const;
  // Token ids of `text` as a piece in the middle of a longer text: special tokens are not parsed
  // and no dummy-prefix "▁" is added (SentencePiece-style models), so " The end" gives the ids
  // of "▁The▁end", which is what encode("The end") gives at the start of a text. For byte-level
  // models the same as encode(text, false).
  std::vector<int32_t> encode_continuation(const std::string& text) const;
  // The bytes a sequence of ids stands for (special tokens as their text); for SentencePiece-style
  // models whose decoder strips it, without the leading space of the dummy prefix.
  std::string decode(const std::vector<int32_t>& ids) const;
  // The bytes of one token (may be part of a UTF-8 character).
  const std::string& token_bytes(int32_t id) const;

  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  int32_t bos_id() const { return bos_id_; }
  bool add_bos() const { return add_bos_; }
  bool is_special(int32_t id) const;
  // True for the end-of-sequence / end-of-turn tokens that end generation.
  bool is_stop(int32_t id) const;
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }
  // The id of a token's text, or -1.
  int32_t find_token(const std::string& text) const;

  ChatFormat chat_format() const { return chat_format_; }
  // The prompt text for a conversation in the model's chat format; throws when the model has
  // no supported chat template. add_generation_prompt appends the assistant turn's header.
  std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

 private:
  Tokenizer();
  struct PreTokenizer;
  struct Spec;
  static Tokenizer assemble(const Spec& spec);
  // Whether a span gets the dummy prefix; at_text_start: it begins at byte 0 of the text.
  bool wants_dummy_prefix(bool at_text_start) const;
  void encode_span(const std::string& span, bool dummy_prefix, std::vector<int32_t>& out) const;
  void bpe_word(const std::string& word, std::vector<int32_t>& out) const;
  void merge_symbols(std::vector<int32_t>& symbols) const;
  std::string inst_prompt(const std::vector<ChatMessage>& messages) const;

  // Where a SentencePiece-style model puts its dummy-prefix "▁".
  enum class DummyPrefix { None, EverySpan, FirstSpan };
  struct Merge {
    int32_t rank;    // lower merges first; equal ranks merge leftmost first
    int32_t result;  // the token the pair becomes
  };

  std::vector<std::string> pieces_;        // token text in GPT-2's byte alphabet (or special text)
  std::vector<std::string> bytes_;         // the bytes each token decodes to
  std::vector<uint8_t> special_;           // control / user-defined tokens
  std::unordered_map<std::string, int32_t> piece_to_id_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> rank and result
  std::vector<int32_t> byte_token_;        // token id of each single byte (256): GPT-2 alphabet or <0xNN>
  std::vector<int32_t> special_by_length_; // special token ids, longest text first
  std::unique_ptr<PreTokenizer> pre_;
  bool ignore_merges_ = false;             // emit a whole piece that is in the vocabulary (Llama 3)
  bool nfc_ = false;                       // NFC normalizer: only text that NFC leaves unchanged
  bool sentencepiece_ = false;             // "▁" for spaces, characters as symbols, byte fallback
  DummyPrefix dummy_prefix_ = DummyPrefix::None;
  bool prefix_unless_space_ = false;       // Metaspace: no dummy prefix before a span that starts with "▁"
  bool split_at_metaspace_ = false;        // Metaspace split: each "▁" starts a new word
  bool strip_leading_space_ = false;       // decode() drops one leading space
  int32_t bos_id_ = -1;
  bool add_bos_ = false;
  std::vector<int32_t> stop_ids_;
  ChatFormat chat_format_ = ChatFormat::None;
  std::string default_system_;             // ChatML: system turn the template adds when none is given
  std::string chat_bos_, chat_eos_;        // [INST] formats: the BOS and EOS text the template writes
};

// Turns a stream of token ids into text that never splits a UTF-8 character.
class TextStream {
 public:
  explicit TextStream(const Tokenizer& tok) : tok_(tok) {}
  // The complete characters available after this token (special tokens are dropped).
  std::string push(int32_t id);
  // Whatever is left (an incomplete trailing sequence is emitted as U+FFFD).
  std::string finish();

 private:
  const Tokenizer& tok_;
  std::string pending_;
};

// Number of bytes of the longest prefix of `s` that is valid, complete UTF-8.
size_t complete_utf8_prefix(const std::string& s);
// Throws kascade::Error naming `what` and the byte offset unless `s` is valid UTF-8.
void check_utf8(const std::string& s, const char* what);

}  // namespace kascade::engine
