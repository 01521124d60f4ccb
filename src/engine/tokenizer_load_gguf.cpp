// Tokenizer::from_gguf: a tokenizer from a GGUF file's tokenizer.ggml.* metadata.
#include "tokenizer_internal.h"

#include "kascade/engine/gguf.h"
#include "kascade/error.h"

namespace kascade::engine {

using tokenizer_detail::pre_tokenizer_kinds;
using tokenizer_detail::PreTokenizerKind;

namespace {

// GGUF token types (tokenizer.ggml.token_type).
constexpr int64_t kTokenUnknown = 2;
constexpr int64_t kTokenControl = 3;
constexpr int64_t kTokenUserDefined = 4;

}  // namespace

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

}  // namespace kascade::engine
