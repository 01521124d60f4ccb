// The built-in development set (deterministic, length, two-hop content, not the evaluation
// tasks) and the JSONL reader's strictness.
#include <gtest/gtest.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "calibrate_test_util.h"
#include "kascade/devset.h"
#include "kascade/engine/gguf.h"
#include "kascade/engine/model_path.h"
#include "kascade/engine/tokenizer.h"

namespace {

using kascade::DevPrompt;
using kascade::make_dev_prompt;
using kascade::read_dev_set_jsonl;

// A stand-in tokenizer: whitespace-separated words.
int64_t count_words(const std::string& s) {
  std::istringstream in(s);
  int64_t n = 0;
  std::string w;
  while (in >> w) ++n;
  return n;
}

TEST(DevSet, SameSeedAndIndexGiveTheSameText) {
  const DevPrompt a = make_dev_prompt(7, 3, 800, count_words);
  const DevPrompt b = make_dev_prompt(7, 3, 800, count_words);
  EXPECT_EQ(a.text, b.text);
  EXPECT_NE(a.text, make_dev_prompt(7, 4, 800, count_words).text);
  EXPECT_NE(a.text, make_dev_prompt(8, 3, 800, count_words).text);
}

TEST(DevSet, ShorterPromptIsAPrefixOfALongerOne) {
  const DevPrompt shorter = make_dev_prompt(1, 0, 300, count_words);
  const DevPrompt longer = make_dev_prompt(1, 0, 3000, count_words);
  ASSERT_LT(shorter.text.size(), longer.text.size());
  EXPECT_EQ(longer.text.compare(0, shorter.text.size(), shorter.text), 0);
}

TEST(DevSet, ReachesTheRequestedLengthByLessThanOneBlock) {
  for (int64_t target : {1, 40, 500, 4000}) {
    const DevPrompt p = make_dev_prompt(2, 0, target, count_words);
    EXPECT_EQ(p.tokens, count_words(p.text)) << target;
    EXPECT_GE(p.tokens, target);
    // A block is at most 9 sentences plus 2 questions: well under 300 words.
    EXPECT_LT(p.tokens, target + 300) << target;
  }
}

TEST(DevSet, EveryQuestionNeedsTwoFactsStatedBeforeIt) {
  const DevPrompt p = make_dev_prompt(5, 1, 6000, count_words);
  ASSERT_GE(p.questions.size(), 30u);
  EXPECT_GE(p.fact_sentences, 300);
  size_t far_apart = 0;
  for (const kascade::DevQuestion& q : p.questions) {
    ASSERT_EQ(p.text.compare(q.question_offset, q.question.size(), q.question), 0) << q.question;
    const std::string answer_line = "\nAnswer: " + q.answer + ".\n";
    EXPECT_EQ(p.text.compare(q.question_offset + q.question.size(), answer_line.size(), answer_line), 0);
    ASSERT_NE(q.first_fact, q.second_fact);
    const size_t first = p.text.find(q.first_fact);
    const size_t second = p.text.find(q.second_fact);
    ASSERT_NE(first, std::string::npos) << q.first_fact;
    ASSERT_NE(second, std::string::npos) << q.second_fact;
    EXPECT_LT(first, q.question_offset) << q.question;
    EXPECT_LT(second, q.question_offset) << q.question;
    // Each fact sentence is written once: a name appears in one birthplace sentence only.
    EXPECT_EQ(p.text.find(q.first_fact, first + 1), std::string::npos) << q.first_fact;
    // The answer comes from the second fact (professions are asked as "a <profession>").
    const std::string bare = q.answer.rfind("a ", 0) == 0 ? q.answer.substr(2) : q.answer;
    EXPECT_NE(q.second_fact.find(bare), std::string::npos) << q.question << " / " << q.second_fact;
    if (std::max(first, second) - std::min(first, second) > 2000) ++far_apart;
  }
  // Long-range reuse: many questions join facts more than 2000 characters apart.
  EXPECT_GE(far_apart, p.questions.size() / 4);
}

TEST(DevSet, IsNotTheEvaluationTasks) {
  const DevPrompt p = make_dev_prompt(3, 0, 5000, count_words);
  for (const char* word : {"pass key", "passkey", "needle", "UUID", "uuid", "VAR ", "most frequent"}) {
    EXPECT_EQ(p.text.find(word), std::string::npos) << word;
  }
  // No long numbers (pass keys, UUID-like strings): ages and years have at most 4 digits.
  size_t run = 0, longest = 0;
  for (char c : p.text) {
    run = std::isdigit(static_cast<unsigned char>(c)) ? run + 1 : 0;
    longest = std::max(longest, run);
  }
  EXPECT_LE(longest, 4u);
}

TEST(DevSet, RejectsBadArguments) {
  EXPECT_KASCADE_ERROR(make_dev_prompt(1, 0, 0, count_words), "at least 1 token");
  EXPECT_KASCADE_ERROR(make_dev_prompt(1, -1, 10, count_words), "index must be >= 0");
  EXPECT_KASCADE_ERROR(make_dev_prompt(1, 0, 10, kascade::TokenCounter{}), "no token counter");
}

TEST(DevSet, ModelTokenizerLength) {
  const auto gguf = kascade::engine::GgufFile::open(kascade::engine::resolve_model_path("default"));
  const auto tok = kascade::engine::Tokenizer::from_gguf(gguf);
  auto count = [&](const std::string& s) { return static_cast<int64_t>(tok.encode(s, false).size()); };
  const DevPrompt p = make_dev_prompt(1, 0, 1024, count);
  const int64_t tokens = static_cast<int64_t>(tok.encode(p.text, false).size());
  EXPECT_EQ(tokens, p.tokens);
  EXPECT_GE(tokens, 1024);
  EXPECT_LT(tokens, 1024 + 400);
}

// ---- JSONL ----------------------------------------------------------------------------------
class DevSetFile : public ::testing::Test {
 protected:
  std::string write(const std::string& content) {
    path_ = ::testing::TempDir() + "devset_" + ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".jsonl";
    std::ofstream(path_, std::ios::binary) << content;
    return path_;
  }
  void TearDown() override {
    if (!path_.empty()) std::remove(path_.c_str());
  }
  std::string path_;
};

TEST_F(DevSetFile, ReadsTextsInOrderSkippingBlankLines) {
  const auto texts = read_dev_set_jsonl(write("{\"text\": \"first\"}\r\n\n   \n{\"text\": \"second \\u00e9\"}"));
  ASSERT_EQ(texts.size(), 2u);
  EXPECT_EQ(texts[0], "first");
  EXPECT_EQ(texts[1], "second \xc3\xa9");
}

TEST_F(DevSetFile, ErrorsNameTheLine) {
  EXPECT_KASCADE_ERROR(read_dev_set_jsonl(write("{\"text\": \"a\"}\n{\"text\": \n")), ":2: invalid JSON");
  EXPECT_KASCADE_ERROR(read_dev_set_jsonl(write("[\"a\"]\n")), ":1: expected an object");
  EXPECT_KASCADE_ERROR(read_dev_set_jsonl(write("{\"txt\": \"a\"}\n")), ":1: unknown key 'txt'");
  EXPECT_KASCADE_ERROR(read_dev_set_jsonl(write("{}\n")), ":1: missing \"text\"");
  EXPECT_KASCADE_ERROR(read_dev_set_jsonl(write("\n{\"text\": 5}\n")), ":2: \"text\" must be a string");
  EXPECT_KASCADE_ERROR(read_dev_set_jsonl(write("{\"text\": \"\"}\n")), ":1: \"text\" is empty");
  EXPECT_KASCADE_ERROR(read_dev_set_jsonl(write("\n\n")), "no prompts");
  EXPECT_KASCADE_ERROR(read_dev_set_jsonl("/nonexistent/dev.jsonl"), "cannot open");
}

}  // namespace
