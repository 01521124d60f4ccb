// SentencePiece-style BPE (Llama 2, Mistral): ids and decoded text of the fixtures' tokenizers
// (tests/data/hf/{llama2,mistral-spm,spm-split}, trained by tools/make_hf_fixtures.py with
// byte_fallback and <0x00>..<0xFF> tokens: the Llama 2 normalizer Prepend + Replace, a Metaspace
// pre-tokenizer with prepend scheme "first", and one with "always" and split) against
// `tokenizers` (spm_tokenizer_ids.json); the same vocabulary as a GGUF "llama" tokenizer merged by
// score (llama2/tokenizer.gguf) against the same ids; byte fallback, BOS and stop tokens, the
// Llama 2 and Mistral chat templates, a Mistral directory that loads and generates, and the
// tokenizer.json / GGUF variants that must be refused.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../temp_dir.h"
#include "hf_test_util.h"
#include "gguf_builder.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/generate.h"
#include "kascade/engine/gguf.h"
#include "kascade/engine/model_path.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"

using kascade::engine::ChatFormat;
using kascade::engine::GgufFile;
using kascade::engine::Tokenizer;

using kascade::testing::error_of;
using kascade::testing::kHfData;
using kascade::testing::read_json;

namespace {

const nlohmann::json& reference_cases(const std::string& model) {
  static const nlohmann::json doc = read_json(kHfData + "spm_tokenizer_ids.json");
  return doc["models"][model];
}

// Every case of `model`'s reference: ids and decoded text equal what `tokenizers` gave.
void expect_reference_ids(const Tokenizer& tok, const std::string& model) {
  const nlohmann::json& cases = reference_cases(model);
  ASSERT_GE(cases.size(), 240u);
  int byte_fallback_cases = 0;
  const int32_t first_byte = tok.find_token("<0x00>"), last_byte = tok.find_token("<0xFF>");
  for (const auto& c : cases) {
    const std::string text = c["text"];
    const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text), want) << model << ", text: " << text;
    EXPECT_EQ(tok.decode(want), c["decoded"].get<std::string>()) << model << ", text: " << text;
    for (int32_t id : want) {
      if (id >= first_byte && id <= last_byte) {
        ++byte_fallback_cases;
        break;
      }
    }
  }
  EXPECT_GE(byte_fallback_cases, 5) << "the corpus must exercise byte fallback";
}

}  // namespace

class SpmTokenizer : public ::testing::TestWithParam<std::string> {};

TEST_P(SpmTokenizer, IdsAndTextEqualTheReferenceTokenizer) {
  expect_reference_ids(Tokenizer::from_hf_directory(kHfData + GetParam()), GetParam());
}

INSTANTIATE_TEST_SUITE_P(Models, SpmTokenizer, ::testing::Values("llama2", "mistral-spm", "spm-split"),
                         [](const auto& param_info) {
                           std::string name = param_info.param;
                           for (char& ch : name) ch = ch == '-' ? '_' : ch;
                           return name;
                         });

TEST(SpmTokenizer, GgufLlamaVocabularyMergesByScoreToTheSameIds) {
  const GgufFile gguf = GgufFile::open(kHfData + "llama2/tokenizer.gguf");
  const Tokenizer tok = Tokenizer::from_gguf(gguf);
  expect_reference_ids(tok, "llama2");
  EXPECT_TRUE(tok.add_bos());
  EXPECT_EQ(tok.bos_id(), tok.find_token("<s>"));
  EXPECT_TRUE(tok.is_stop(tok.find_token("</s>")));
  EXPECT_TRUE(tok.is_special(tok.find_token("<unk>")));
  EXPECT_EQ(tok.chat_format(), ChatFormat::Llama2);
}

TEST(SpmTokenizer, CharactersOutsideTheVocabularyFallBackToBytes) {
  const Tokenizer tok = Tokenizer::from_hf_directory(kHfData + "llama2");
  // U+1F999 (llama emoji) is not in the vocabulary: "▁" then its four UTF-8 bytes.
  const std::vector<int32_t> ids = tok.encode("\xF0\x9F\xA6\x99");
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids[0], tok.find_token("\xE2\x96\x81"));
  EXPECT_EQ(ids[1], tok.find_token("<0xF0>"));
  EXPECT_EQ(ids[4], tok.find_token("<0x99>"));
  EXPECT_EQ(tok.token_bytes(ids[1]), "\xF0");
  EXPECT_EQ(tok.decode(ids), "\xF0\x9F\xA6\x99");  // the dummy prefix's space is stripped
  // Streaming holds the bytes back until the character is complete.
  kascade::engine::TextStream stream(tok);
  std::string streamed;
  for (size_t i = 1; i < ids.size(); ++i) {
    const std::string piece = stream.push(ids[i]);
    EXPECT_EQ(piece.empty(), i + 1 < ids.size()) << "token " << i;
    streamed += piece;
  }
  EXPECT_EQ(streamed, "\xF0\x9F\xA6\x99");
  // Without the Strip decoder the leading space stays.
  const Tokenizer split = Tokenizer::from_hf_directory(kHfData + "spm-split");
  EXPECT_EQ(split.decode(split.encode("Hello")), " Hello");
}

TEST(SpmTokenizer, LongTextIsOneWordAndStillFast) {
  // Without a pre-tokenizer the whole span is one word: the merge must not be quadratic.
  const Tokenizer tok = Tokenizer::from_hf_directory(kHfData + "llama2");
  std::string text;
  while (text.size() < 400000) text += "The sky is a map, and the map is a story. \xE4\xBD\xA0\xE5\xA5\xBD 3.14159\n";
  const std::vector<int32_t> ids = tok.encode(text);
  EXPECT_LT(ids.size(), text.size() / 2);
  EXPECT_EQ(tok.decode(ids), text);
}

TEST(SpmTokenizer, BosAndStopTokensFromTheSideFiles) {
  for (const char* model : {"llama2", "mistral-spm"}) {
    const Tokenizer tok = Tokenizer::from_hf_directory(kHfData + model);
    EXPECT_TRUE(tok.add_bos()) << model;
    EXPECT_EQ(tok.bos_id(), tok.find_token("<s>")) << model;
    EXPECT_TRUE(tok.is_stop(tok.find_token("</s>"))) << model;
    EXPECT_FALSE(tok.is_stop(tok.find_token("<s>"))) << model;
  }
}

TEST(SpmTokenizer, Llama2AndMistralChatTemplates) {
  const Tokenizer llama2 = Tokenizer::from_hf_directory(kHfData + "llama2");
  ASSERT_EQ(llama2.chat_format(), ChatFormat::Llama2);
  EXPECT_EQ(llama2.apply_chat_template({{"user", " Hi "}}, true), "<s>[INST] Hi [/INST]");
  EXPECT_EQ(llama2.apply_chat_template({{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."},
                                        {"user", "Why?"}},
                                       true),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] Why? [/INST]");
  // The prompt's special tokens are recognised: BOS is an id, the text after it has its dummy prefix.
  const std::vector<int32_t> ids = llama2.encode(llama2.apply_chat_template({{"user", "Hi"}}, true));
  EXPECT_EQ(ids.front(), llama2.bos_id());
  EXPECT_EQ(llama2.decode({ids.begin() + 1, ids.end()}), "[INST] Hi [/INST]");

  const Tokenizer mistral = Tokenizer::from_hf_directory(kHfData + "mistral-spm");
  ASSERT_EQ(mistral.chat_format(), ChatFormat::Mistral);
  EXPECT_EQ(mistral.apply_chat_template({{"user", "Hi"}, {"assistant", "Hello."}, {"user", "Why?"}}, true),
            "<s>[INST] Hi [/INST]Hello.</s>[INST] Why? [/INST]");
  EXPECT_EQ(mistral.apply_chat_template({{"system", "Be brief."}, {"user", "Hi"}}, true),
            "<s>[INST] Be brief.\n\nHi [/INST]");
  const std::string bad = error_of([&] { mistral.apply_chat_template({{"user", "a"}, {"user", "b"}}, true); });
  EXPECT_NE(bad.find("message 2 has role 'user'"), std::string::npos) << bad;
}

TEST(SpmTokenizer, MistralDirectoryLoadsAndGenerates) {
  const auto source = kascade::engine::ModelSource::open(kHfData + "mistral-spm");
  const Tokenizer tok = source.tokenizer();
  const kascade::engine::Model model = source.load();
  auto backend = kascade::engine::make_backend("cpu", model, nullptr, {});
  const std::vector<int32_t> prompt = tok.encode(tok.apply_chat_template({{"user", "Tell me a story."}}, true));
  ASSERT_EQ(prompt.front(), tok.bos_id());
  kascade::engine::GenerateOptions options;
  options.max_tokens = 6;
  const kascade::engine::GenerateResult r = kascade::engine::generate(*backend, tok, prompt, options);
  EXPECT_EQ(r.prompt_tokens, static_cast<int>(prompt.size()));
  ASSERT_FALSE(r.tokens.empty());
  for (int32_t id : r.tokens) EXPECT_LT(id, tok.vocab_size());
}

TEST(SpmTokenizer, RefusesWhatItCannotReproduce) {
  kascade::testing::TempDir dir("spm_tokenizer");
  const nlohmann::json llama2 = read_json(kHfData + "llama2/tokenizer.json");
  const nlohmann::json mistral = read_json(kHfData + "mistral-spm/tokenizer.json");
  auto expect_error = [&](const nlohmann::json& original, const std::function<void(nlohmann::json&)>& edit,
                          const std::string& phrase) {
    nlohmann::json doc = original;
    edit(doc);
    std::ofstream(dir.file("tokenizer.json")) << doc.dump();
    const std::string msg = error_of([&] { Tokenizer::from_hf_directory(dir.path().string()); });
    EXPECT_NE(msg.find("tokenizer.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(phrase), std::string::npos) << "expected '" << phrase << "' in: " << msg;
  };
  const std::string unchanged = error_of([&] {
    std::ofstream(dir.file("tokenizer.json")) << llama2.dump();
    Tokenizer::from_hf_directory(dir.path().string());
  });
  EXPECT_EQ(unchanged, "");
  expect_error(llama2, [](nlohmann::json& d) { d["normalizer"]["normalizers"][0] = {{"type", "Lowercase"}}; },
               "normalizer 'Lowercase' is not supported");
  expect_error(llama2, [](nlohmann::json& d) { d["normalizer"] = nullptr; }, "without Replace");
  expect_error(llama2, [](nlohmann::json& d) { d["model"]["type"] = "Unigram"; }, "model type 'Unigram'");
  expect_error(llama2,
               [](nlohmann::json& d) {
                 d["model"]["vocab"]["<0x41>?"] = d["model"]["vocab"]["<0x41>"];
                 d["model"]["vocab"].erase("<0x41>");
               },
               "byte-fallback token <0x41> is not in the vocabulary");
  expect_error(llama2, [](nlohmann::json& d) { d["pre_tokenizer"] = {{"type", "ByteLevel"}}; },
               "pre_tokenizer 'ByteLevel' is not supported with byte_fallback");
  expect_error(llama2, [](nlohmann::json& d) { d["decoder"]["decoders"][3]["start"] = 2; }, "decoder 'Strip'");
  expect_error(llama2, [](nlohmann::json& d) { d["decoder"]["decoders"].erase(1); }, "<0xNN>");
  expect_error(llama2, [](nlohmann::json& d) { d["decoder"] = {{"type", "Metaspace"}}; }, "<0xNN>");
  expect_error(mistral, [](nlohmann::json& d) { d["pre_tokenizer"]["prepend_scheme"] = "sometimes"; },
               "prepend_scheme 'sometimes'");
  expect_error(mistral, [](nlohmann::json& d) { d["pre_tokenizer"]["replacement"] = "_"; }, "replacement");
  // Prepend without byte_fallback is not the Llama 2 normalizer of a byte-level tokenizer.
  expect_error(read_json(kHfData + "qwen2/tokenizer.json"),
               [](nlohmann::json& d) { d["normalizer"] = {{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}}; },
               "normalizer 'Prepend' is not supported");
}

namespace {

// A GGUF "llama" tokenizer of `tokens` (all normal), with scores unless `scores` is empty.
std::vector<uint8_t> llama_gguf(const std::vector<std::string>& tokens, const std::vector<float>& scores) {
  kascade::engine::test::GgufBuilder b;
  b.header(0, scores.empty() ? 2 : 3).kv_str("tokenizer.ggml.model", "llama");
  b.str("tokenizer.ggml.tokens").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(tokens.size());
  for (const std::string& t : tokens) b.str(t);
  if (!scores.empty()) {
    b.str("tokenizer.ggml.scores").put<uint32_t>(9).put<uint32_t>(6).put<uint64_t>(scores.size());
    for (float s : scores) b.put<float>(s);
  }
  return b.bytes;
}

std::string gguf_error(const std::vector<uint8_t>& bytes) {
  const GgufFile gguf = GgufFile::parse(bytes.data(), bytes.size(), "spm.gguf");
  return error_of([&] { Tokenizer::from_gguf(gguf); });
}

}  // namespace

TEST(SpmTokenizer, GgufLlamaVocabularyErrors) {
  std::vector<std::string> tokens = {"\xE2\x96\x81", "a"};
  for (int b = 0; b < 256; ++b) {
    char text[8];
    std::snprintf(text, sizeof text, "<0x%02X>", b);
    tokens.push_back(text);
  }
  std::vector<float> scores(tokens.size(), 0.0f);
  EXPECT_EQ(gguf_error(llama_gguf(tokens, scores)), "");
  EXPECT_NE(gguf_error(llama_gguf(tokens, {})).find("needs tokenizer.ggml.scores"), std::string::npos);
  std::vector<float> nan_scores = scores;
  nan_scores[1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(gguf_error(llama_gguf(tokens, nan_scores)).find("token 1 has a non-finite score"), std::string::npos);
  std::vector<std::string> no_bytes(tokens.begin(), tokens.end() - 1);
  EXPECT_NE(gguf_error(llama_gguf(no_bytes, std::vector<float>(no_bytes.size(), 0.0f))).find("<0xFF>"),
            std::string::npos);
  std::vector<float> short_scores(scores.begin(), scores.end() - 1);
  EXPECT_NE(gguf_error(llama_gguf(tokens, short_scores)).find("scores for"), std::string::npos);
}

TEST(SpmTokenizer, InstTemplateWithoutSpecialEosIsAnErrorWhenUsed) {
  kascade::testing::TempDir dir("spm_no_eos");
  nlohmann::json config = read_json(kHfData + "mistral-spm/tokenizer_config.json");
  config["eos_token"] = "e";  // an ordinary token: the template cannot write it as EOS text
  std::ofstream(dir.file("tokenizer.json")) << read_json(kHfData + "mistral-spm/tokenizer.json").dump();
  std::ofstream(dir.file("tokenizer_config.json")) << config.dump();
  const Tokenizer tok = Tokenizer::from_hf_directory(dir.path().string());  // loads: plain prompts work
  EXPECT_EQ(tok.chat_format(), ChatFormat::Mistral);
  const std::string msg = error_of([&] { tok.apply_chat_template({{"user", "Hi"}}, true); });
  EXPECT_NE(msg.find("has no special EOS token"), std::string::npos) << msg;
}

TEST(SpmTokenizer, ContinuationHasNoDummyPrefix) {
  for (const char* model : {"llama2", "mistral-spm", "spm-split"}) {
    const Tokenizer tok = Tokenizer::from_hf_directory(kHfData + model);
    EXPECT_EQ(tok.encode_continuation(" The sky is a map."), tok.encode("The sky is a map.")) << model;
    EXPECT_NE(tok.encode_continuation("The sky"), tok.encode("The sky")) << model;  // no "▁" in front
    const std::vector<int32_t> special_text = tok.encode_continuation("</s>");
    EXPECT_GT(special_text.size(), 1u) << model;  // special-token text is not parsed
    EXPECT_EQ(tok.decode(special_text), "</s>") << model;
  }
  const Tokenizer qwen = Tokenizer::from_hf_directory(kHfData + "qwen2");  // byte-level: encode without specials
  EXPECT_EQ(qwen.encode_continuation(" The <|im_end|> sky"), qwen.encode(" The <|im_end|> sky", false));
}
