// Tokenizer: ids of the default model's tokenizer against Hugging Face `tokenizers` on a varied
// corpus (tests/data/engine/tokenizer_ids.json, made by tools/make_engine_fixtures.py), round
// trips, chat template, streaming of partial UTF-8.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine_test_model.h"
#include "gguf_builder.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"

using kascade::engine::GgufFile;
using kascade::engine::Tokenizer;

namespace {

const Tokenizer& smollm2() { return kascade::engine::test::default_tokenizer(); }

nlohmann::json fixture() {
  std::ifstream f(std::string(KASCADE_TEST_DATA) + "/engine/tokenizer_ids.json");
  return nlohmann::json::parse(f);
}

}  // namespace

TEST(Tokenizer, IdsEqualTheReferenceTokenizer) {
  const nlohmann::json doc = fixture();
  ASSERT_GE(doc["cases"].size(), 20u);
  for (const auto& c : doc["cases"]) {
    const std::string text = c["text"];
    const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(smollm2().encode(text), want) << "text: " << text;
    // Bytes that have no token (a few control bytes) are dropped, as the reference drops them.
    EXPECT_EQ(smollm2().decode(want), c["decoded"].get<std::string>());
  }
}

TEST(Tokenizer, SpecialTokensAreTextWithoutParsing) {
  const Tokenizer& tok = smollm2();
  const int32_t im_start = tok.find_token("<|im_start|>");
  ASSERT_GE(im_start, 0);
  EXPECT_TRUE(tok.is_special(im_start));
  EXPECT_EQ(tok.encode("<|im_start|>"), std::vector<int32_t>{im_start});
  const std::vector<int32_t> plain = tok.encode("<|im_start|>", /*parse_special=*/false);
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(tok.decode(plain), "<|im_start|>");
}

TEST(Tokenizer, StopTokensAndChatTemplate) {
  const Tokenizer& tok = smollm2();
  EXPECT_TRUE(tok.is_stop(tok.find_token("<|im_end|>")));
  EXPECT_TRUE(tok.is_stop(tok.find_token("<|endoftext|>")));
  EXPECT_FALSE(tok.is_stop(tok.find_token("<|im_start|>")));
  EXPECT_FALSE(tok.add_bos());
  EXPECT_EQ(tok.chat_format(), kascade::engine::ChatFormat::ChatML);
  EXPECT_EQ(tok.apply_chat_template({{"user", "Hi"}}, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(tok.apply_chat_template({{"system", "Be brief."}, {"user", "Hi"}}, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
}

TEST(Tokenizer, RejectsInvalidUtf8) {
  EXPECT_THROW(smollm2().encode("abc\xff"), kascade::Error);
  EXPECT_THROW(smollm2().encode("\xc3"), kascade::Error);          // truncated sequence
  EXPECT_THROW(smollm2().encode("\xed\xa0\x80"), kascade::Error);  // a UTF-16 surrogate
  EXPECT_THROW(smollm2().token_bytes(smollm2().vocab_size()), kascade::Error);
}

TEST(Tokenizer, TextStreamNeverSplitsACharacter) {
  const Tokenizer& tok = smollm2();
  const std::string text = "Emoji 🙂 and CJK 你好 done";
  const std::vector<int32_t> ids = tok.encode(text);
  kascade::engine::TextStream stream(tok);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    EXPECT_EQ(kascade::engine::complete_utf8_prefix(piece), piece.size()) << "partial character emitted";
    out += piece;
  }
  out += stream.finish();
  EXPECT_EQ(out, text);
  // Special tokens are not text.
  kascade::engine::TextStream s2(tok);
  EXPECT_EQ(s2.push(tok.find_token("<|im_end|>")), "");
}

TEST(Tokenizer, Utf8PrefixStopsAtIncompleteOrInvalidBytes) {
  using kascade::engine::complete_utf8_prefix;
  EXPECT_EQ(complete_utf8_prefix("ab\xf0\x9f\x99"), 2u);   // emoji cut after 3 of 4 bytes
  EXPECT_EQ(complete_utf8_prefix("\xf0\x9f\x99\x82"), 4u);
  EXPECT_EQ(complete_utf8_prefix("a\x80" "b"), 1u);            // a stray continuation byte
  EXPECT_EQ(complete_utf8_prefix("\xc0\xaf"), 0u);          // overlong '/'
}

// The other pre-tokenizers on a reduced vocabulary (tokenizer_<pre>.gguf) against `tokenizers`
// configured as each family's tokenizer.json declares it.
class PreTokenizer : public ::testing::TestWithParam<std::string> {};

TEST_P(PreTokenizer, IdsEqualTheReferenceTokenizer) {
  const std::string pre = GetParam();
  const kascade::engine::GgufFile gguf =
      kascade::engine::GgufFile::open(std::string(KASCADE_TEST_DATA) + "/engine/tokenizer_" + pre + ".gguf");
  const Tokenizer tok = Tokenizer::from_gguf(gguf);
  std::ifstream f(std::string(KASCADE_TEST_DATA) + "/engine/tokenizer_pretok_ids.json");
  const nlohmann::json doc = nlohmann::json::parse(f);
  const auto& cases = doc["pre_tokenizers"][pre];
  ASSERT_GE(cases.size(), 20u);
  for (const auto& c : cases) {
    const std::string text = c["text"];
    EXPECT_EQ(tok.encode(text), c["ids"].get<std::vector<int32_t>>()) << pre << ": " << text;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, PreTokenizer, ::testing::Values("llama-bpe", "qwen2", "gpt-2"),
                         [](const auto& param_info) {
                           std::string name = param_info.param;
                           for (char& ch : name) ch = ch == '-' ? '_' : ch;
                           return name;
                         });

namespace {

// A one-token tokenizer with the given pre-tokenizer and chat template (GGUF bytes).
std::vector<uint8_t> minimal_tokenizer(const std::string& pre, const std::string& chat_template) {
  kascade::engine::test::GgufBuilder b;
  b.header(0, chat_template.empty() ? 4 : 5).kv_str("tokenizer.ggml.model", "gpt2").kv_str("tokenizer.ggml.pre", pre);
  b.str("tokenizer.ggml.tokens").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(1).str("a");
  b.str("tokenizer.ggml.merges").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(0);
  if (!chat_template.empty()) b.kv_str("tokenizer.chat_template", chat_template);
  return b.bytes;
}

}  // namespace

TEST(Tokenizer, Llama3AndQwenChatTemplates) {
  const std::vector<uint8_t> llama3 = minimal_tokenizer(
      "llama-bpe", "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}");
  const auto g1 = kascade::engine::GgufFile::parse(llama3.data(), llama3.size(), "llama3.gguf");
  const Tokenizer t1 = Tokenizer::from_gguf(g1);
  EXPECT_EQ(t1.chat_format(), kascade::engine::ChatFormat::Llama3);
  EXPECT_EQ(t1.apply_chat_template({{"user", "Hi"}}, true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // Qwen writes its default system turn with a Jinja "\n" escape.
  const std::vector<uint8_t> qwen = minimal_tokenizer(
      "qwen2", "{{- '<|im_start|>system\\nYou are Qwen.<|im_end|>\\n' }}{{ '<|im_start|>' + message['role'] }}");
  const auto g2 = kascade::engine::GgufFile::parse(qwen.data(), qwen.size(), "qwen.gguf");
  const Tokenizer t2 = Tokenizer::from_gguf(g2);
  EXPECT_EQ(t2.apply_chat_template({{"user", "Hi"}}, true),
            "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  // No template: --chat is an error.
  const std::vector<uint8_t> none = minimal_tokenizer("gpt-2", "");
  const auto g3 = kascade::engine::GgufFile::parse(none.data(), none.size(), "none.gguf");
  EXPECT_THROW(Tokenizer::from_gguf(g3).apply_chat_template({{"user", "Hi"}}, true), kascade::Error);
}

TEST(Tokenizer, UnknownPreTokenizerIsAnError) {
  const std::vector<uint8_t> bytes = minimal_tokenizer("mystery", "");
  const kascade::engine::GgufFile gguf = kascade::engine::GgufFile::parse(bytes.data(), bytes.size(), "t.gguf");
  try {
    Tokenizer::from_gguf(gguf);
    FAIL() << "accepted an unknown pre-tokenizer";
  } catch (const kascade::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.ggml.pre 'mystery' is not supported"), std::string::npos)
        << e.what();
  }
}
