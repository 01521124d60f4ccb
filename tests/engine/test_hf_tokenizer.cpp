// tokenizer.json loading: ids of the HF fixtures' tokenizers (tests/data/hf/<model>/, trained by
// tools/make_hf_fixtures.py: Split+ByteLevel with the Llama 3 and Qwen2 regexes, Digits+ByteLevel,
// merges in both JSON forms, special and non-special added tokens) against the ids `tokenizers`
// assigned (tokenizer_ids.json); BOS, stop tokens and chat format from the side files; and
// tokenizer.json variants that must be refused with a clear message.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../temp_dir.h"
#include "hf_test_util.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"

using kascade::engine::ChatFormat;
using kascade::engine::Tokenizer;
using kascade::testing::kHfData;
using kascade::testing::read_json;

class HfTokenizer : public ::testing::TestWithParam<std::string> {};

TEST_P(HfTokenizer, IdsEqualTheReferenceTokenizer) {
  const std::string model = GetParam();
  const Tokenizer tok = Tokenizer::from_hf_directory(kHfData + model);
  const nlohmann::json cases = read_json(kHfData + "tokenizer_ids.json")["models"][model];
  ASSERT_GE(cases.size(), 28u);
  int refused = 0;
  for (const auto& c : cases) {
    const std::string text = c["text"];
    const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    if (c.value("nfc_refused", false)) {  // NFC might change it: refused, never tokenized differently
      EXPECT_THROW(tok.encode(text), kascade::Error) << model << ", text: " << text;
      ++refused;
      continue;
    }
    EXPECT_EQ(tok.encode(text), want) << model << ", text: " << text;
    EXPECT_EQ(tok.decode(want), text) << model;  // every byte has a token in these vocabularies
  }
  EXPECT_EQ(refused, model == "qwen3" ? 2 : 0);  // qwen3's tokenizer.json normalizes to NFC, as Qwen's do
}

TEST(HfTokenizer, NfcNormalizerRefusesTextNfcCouldChange) {
  const Tokenizer qwen3 = Tokenizer::from_hf_directory(kHfData + "qwen3");
  try {
    qwen3.encode("caf" "e\xcc\x81");  // e + U+0301 COMBINING ACUTE ACCENT: NFC makes it U+00E9
    FAIL() << "a combining accent was tokenized without normalization";
  } catch (const kascade::Error& e) {
    EXPECT_NE(std::string(e.what()).find("U+0301 at byte 4"), std::string::npos) << e.what();
  }
  EXPECT_THROW(qwen3.encode("\xe2\x84\xab"), kascade::Error);       // U+212B ANGSTROM SIGN: NFC makes it U+00C5
  EXPECT_FALSE(qwen3.encode("caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd").empty());  // precomposed, CJK: accepted
  // Without a normalizer the same text is tokenized as it is.
  EXPECT_FALSE(Tokenizer::from_hf_directory(kHfData + "qwen2").encode("caf" "e\xcc\x81").empty());
}

INSTANTIATE_TEST_SUITE_P(Models, HfTokenizer, ::testing::Values("llama", "mistral", "qwen2", "qwen3"));

TEST(HfTokenizer, BosStopTokensAndChatFormatComeFromTheSideFiles) {
  const Tokenizer llama = Tokenizer::from_hf_directory(kHfData + "llama");
  EXPECT_TRUE(llama.add_bos());  // its TemplateProcessing post-processor prepends <|begin_of_text|>
  EXPECT_EQ(llama.bos_id(), llama.find_token("<|begin_of_text|>"));
  EXPECT_TRUE(llama.is_stop(llama.find_token("<|eot_id|>")));
  EXPECT_TRUE(llama.is_stop(llama.find_token("<|end_of_text|>")));
  EXPECT_EQ(llama.chat_format(), ChatFormat::Llama3);

  const Tokenizer qwen = Tokenizer::from_hf_directory(kHfData + "qwen2");
  EXPECT_FALSE(qwen.add_bos());
  EXPECT_TRUE(qwen.is_stop(qwen.find_token("<|im_end|>")));
  EXPECT_FALSE(qwen.is_stop(qwen.find_token("<|im_start|>")));
  EXPECT_EQ(qwen.chat_format(), ChatFormat::ChatML);
  EXPECT_EQ(qwen.apply_chat_template({{"user", "Hi"}}, true),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");

  const Tokenizer mistral = Tokenizer::from_hf_directory(kHfData + "mistral");
  EXPECT_TRUE(mistral.add_bos());
  EXPECT_EQ(mistral.bos_id(), mistral.find_token("<s>"));
  EXPECT_TRUE(mistral.is_stop(mistral.find_token("</s>")));
  EXPECT_EQ(mistral.chat_format(), ChatFormat::None);
}

TEST(HfTokenizer, RefusesWhatItCannotReproduce) {
  kascade::testing::TempDir dir("hf_tokenizer");
  const nlohmann::json original = read_json(kHfData + "qwen2/tokenizer.json");
  auto error_with = [&](const std::function<void(nlohmann::json&)>& edit) -> std::string {
    nlohmann::json doc = original;
    edit(doc);
    std::ofstream(dir.file("tokenizer.json")) << doc.dump();
    try {
      Tokenizer::from_hf_directory(dir.path().string());
    } catch (const kascade::Error& e) {
      return e.what();
    }
    return "";
  };
  auto expect_error = [&](const std::function<void(nlohmann::json&)>& edit, const std::string& phrase) {
    const std::string msg = error_with(edit);
    EXPECT_NE(msg.find("tokenizer.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(phrase), std::string::npos) << "expected '" << phrase << "' in: " << msg;
  };
  EXPECT_EQ(error_with([](nlohmann::json&) {}), "");
  expect_error([](nlohmann::json& d) { d["normalizer"] = {{"type", "NFKC"}}; }, "normalizer 'NFKC' is not supported");
  expect_error([](nlohmann::json& d) { d["model"]["type"] = "Unigram"; }, "model type 'Unigram'");
  expect_error([](nlohmann::json& d) { d["model"]["byte_fallback"] = true; }, "byte_fallback");
  expect_error([](nlohmann::json& d) { d["pre_tokenizer"] = {{"type", "Metaspace"}}; }, "pre_tokenizer 'Metaspace'");
  expect_error([](nlohmann::json& d) { d["pre_tokenizer"] = nullptr; }, "no ByteLevel step");
  expect_error([](nlohmann::json& d) { d["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; },
               "behavior 'Removed'");
  expect_error([](nlohmann::json& d) { d["model"]["merges"][0] = "nospace"; }, "has no space");
  expect_error([](nlohmann::json& d) { d["model"]["merges"][0] = {"zzz", "qqq"}; }, "not in the vocabulary");
  expect_error([](nlohmann::json& d) { d["model"]["vocab"].erase("a"); }, "has no vocabulary entry");
  expect_error([](nlohmann::json& d) { d["added_tokens"][0]["lstrip"] = true; }, "lstrip");
  expect_error([](nlohmann::json& d) { d["model"]["vocab"]["a"] = "x"; }, "bad id");
  // Not JSON at all.
  std::ofstream(dir.file("tokenizer.json")) << "{\"model\": ";
  EXPECT_THROW(Tokenizer::from_hf_directory(dir.path().string()), kascade::Error);
  EXPECT_THROW(Tokenizer::from_hf_directory(dir.file("missing")), kascade::Error);
}
