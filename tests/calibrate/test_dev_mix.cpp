// The development set of calibration (kascade/calibrate/dev_mix.h): equal kinds in both halves,
// the row layout of each kind, the dev split only, and bad configurations.
#include <gtest/gtest.h>

#include <set>

#include "calibrate_test_util.h"
#include "dev_test_util.h"
#include "kascade/calibrate/dev_mix.h"

using namespace kascade;
using kascade::testing::dev_documents;
using kascade::testing::word_tokenizer;

namespace {

DevMixConfig small_config() {
  DevMixConfig c;
  c.prompts = 12;
  c.length = 200;
  c.continuation_rows = 8;
  return c;
}

}  // namespace

TEST(DevMix, HalvesHoldEveryKindEqually) {
  const DevMix mix = make_dev_mix(small_config(), word_tokenizer(40), dev_documents());
  ASSERT_EQ(mix.statistics.size(), 6u);
  ASSERT_EQ(mix.held_out.size(), 6u);
  for (const std::vector<DevExample>* half : {&mix.statistics, &mix.held_out}) {
    int counts[3] = {0, 0, 0};
    for (const DevExample& ex : *half) ++counts[static_cast<int>(ex.kind)];
    EXPECT_EQ(counts[0], 2);
    EXPECT_EQ(counts[1], 2);
    EXPECT_EQ(counts[2], 2);
  }
  // Pairs: the i-th statistics prompt and the i-th held-out prompt are of the same kind (and, for
  // retrieval, the same task), never the same example.
  for (size_t i = 0; i < mix.statistics.size(); ++i) {
    EXPECT_EQ(mix.statistics[i].kind, mix.held_out[i].kind);
    EXPECT_NE(mix.statistics[i].context, mix.held_out[i].context);
    if (mix.statistics[i].kind == DevKind::Retrieval) {
      EXPECT_EQ(mix.statistics[i].name.substr(0, mix.statistics[i].name.find(' ')),
                mix.held_out[i].name.substr(0, mix.held_out[i].name.find(' ')));
    }
  }
  EXPECT_NE(mix.description.find("6 statistics prompts of 200 tokens + 6 held-out prompts of 200 tokens"), std::string::npos) << mix.description;
  EXPECT_NE(mix.description.find("retrieval 2 + 2, copy 2 + 2, continuation 2 + 2"), std::string::npos)
      << mix.description;
}

TEST(DevMix, TaskRowsAreTheQuestionAndTheAnswerFromTheDevSplit) {
  const eval::TaskTokenizer tok = word_tokenizer(40);
  const DevMix mix = make_dev_mix(small_config(), tok, dev_documents());
  int checked = 0;
  for (const DevExample& ex : mix.statistics) {
    if (ex.kind == DevKind::Continuation) continue;
    // The example is make_example's of the dev split: statistics prompt i is example 2 * i.
    const std::string task = ex.kind == DevKind::Copy ? "copy" : ex.name.substr(0, ex.name.find(' '));
    const int index = std::stoi(ex.name.substr(ex.name.find('#') + 1));
    const eval::Example dev = eval::make_example(task, 200, index, 1, tok, eval::Split::Dev);
    const eval::Example other = eval::make_example(task, 200, index, 1, tok, eval::Split::Eval);
    EXPECT_EQ(ex.context, dev.context) << ex.name;
    EXPECT_NE(ex.context, other.context) << ex.name << ": the eval split's example";
    std::vector<int32_t> rows = dev.query;
    rows.insert(rows.end(), dev.answer.begin(), dev.answer.end() - 1);
    std::vector<int32_t> targets(dev.query.begin() + 1, dev.query.end());
    targets.insert(targets.end(), dev.answer.begin(), dev.answer.end());
    EXPECT_EQ(ex.rows, rows);
    EXPECT_EQ(ex.targets, targets);
    EXPECT_EQ(ex.first_answer_row, static_cast<int>(dev.query.size()) - 1);
    // The statistics' prompt is the context and the question: what the model sees before answering.
    std::vector<int32_t> prompt = dev.context;
    prompt.insert(prompt.end(), dev.query.begin(), dev.query.end());
    EXPECT_EQ(ex.prompt(), prompt);
    EXPECT_EQ(ex.context.size() + static_cast<size_t>(ex.first_answer_row) + 1, 200u);
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}

TEST(DevMix, ContinuationScoresTheLastTokensOfDevDocuments) {
  const DevMix mix = make_dev_mix(small_config(), word_tokenizer(40), dev_documents());
  std::set<std::string> names;
  for (const std::vector<DevExample>* half : {&mix.statistics, &mix.held_out}) {
    for (const DevExample& ex : *half) {
      if (ex.kind != DevKind::Continuation) continue;
      EXPECT_NE(ex.name.find("/dev/"), std::string::npos) << ex.name;
      names.insert(ex.name);
      EXPECT_EQ(ex.context.size() + ex.rows.size(), 200u);
      ASSERT_EQ(ex.rows.size(), 8u);
      ASSERT_EQ(ex.targets.size(), 8u);
      EXPECT_EQ(ex.context.front(), kascade::testing::kWordBos);
      for (size_t r = 0; r + 1 < ex.rows.size(); ++r) EXPECT_EQ(ex.targets[r], ex.rows[r + 1]);
      EXPECT_EQ(ex.first_answer_row, 0);
    }
  }
  EXPECT_EQ(names.size(), 4u);  // four different documents
}

TEST(DevMix, HeldOutPromptsTakeTheirLengthsInTurnByRoundOfKinds) {
  DevMixConfig c = small_config();
  c.prompts = 24;  // 12 pairs: four rounds of the three kinds
  c.held_out_lengths = {160, 240};
  const DevMix mix = make_dev_mix(c, word_tokenizer(40), dev_documents());
  ASSERT_EQ(mix.held_out.size(), 12u);
  for (size_t i = 0; i < mix.held_out.size(); ++i) {
    const DevExample& ex = mix.held_out[i];
    const size_t length = (i / 3) % 2 == 0 ? 160u : 240u;  // pair i: round i / 3 of the kinds
    const size_t tokens = ex.kind == DevKind::Continuation ? ex.context.size() + ex.rows.size() : ex.prompt().size();
    EXPECT_EQ(tokens, length) << ex.name;
    EXPECT_NE(ex.name.find(" @" + std::to_string(length)), std::string::npos) << ex.name;
    // The statistics half keeps `length`.
    const DevExample& st = mix.statistics[i];
    EXPECT_EQ(st.kind == DevKind::Continuation ? st.context.size() + st.rows.size() : st.prompt().size(), 200u) << st.name;
  }
  // Every kind is held out at both lengths.
  std::set<std::pair<int, size_t>> seen;
  for (const DevExample& ex : mix.held_out) seen.insert({static_cast<int>(ex.kind), ex.context.size() > 200 ? 240u : 160u});
  EXPECT_EQ(seen.size(), 6u);
  EXPECT_NE(mix.description.find("12 statistics prompts of 200 tokens + 12 held-out prompts of 160, 240 tokens"),
            std::string::npos)
      << mix.description;
  // Continuation rows must fit the shortest length.
  c.held_out_lengths = {9, 240};
  EXPECT_KASCADE_ERROR(make_dev_mix(c, word_tokenizer(40), dev_documents()), "continuation rows must be in 1..7 for length 9");
}

TEST(DevMix, HeldOutTaskPromptsAtTheModelsFullContextLeaveRoomForTheirAnswers) {
  DevMixConfig c = small_config();
  c.held_out_lengths = {240};
  const DevMix unlimited = make_dev_mix(c, word_tokenizer(40), dev_documents());
  c.max_positions = 240;
  const DevMix fitted = make_dev_mix(c, word_tokenizer(40), dev_documents());
  int shortened = 0;
  for (size_t i = 0; i < fitted.held_out.size(); ++i) {
    const DevExample& ex = fitted.held_out[i];
    EXPECT_LE(ex.context.size() + ex.rows.size(), 240u) << ex.name;
    if (ex.kind == DevKind::Continuation) {
      EXPECT_EQ(ex.rows, unlimited.held_out[i].rows) << ex.name;  // exactly 240 already
      continue;
    }
    EXPECT_EQ(ex.name, unlimited.held_out[i].name);
    // A one-token answer adds no row; a longer one runs past 240 without the limit, and with it
    // the prompt is drawn shorter.
    if (unlimited.held_out[i].context.size() + unlimited.held_out[i].rows.size() <= 240u) {
      EXPECT_EQ(ex.rows, unlimited.held_out[i].rows) << ex.name;
      continue;
    }
    EXPECT_LT(ex.prompt().size(), 240u) << ex.name;
    ++shortened;
  }
  EXPECT_GE(shortened, 2);
  // Statistics prompts are not scored over their answers: untouched.
  for (size_t i = 0; i < fitted.statistics.size(); ++i)
    EXPECT_EQ(fitted.statistics[i].context, unlimited.statistics[i].context);
}

TEST(DevMix, IsAPureFunctionOfItsConfig) {
  const DevMix a = make_dev_mix(small_config(), word_tokenizer(40), dev_documents());
  const DevMix b = make_dev_mix(small_config(), word_tokenizer(40), dev_documents());
  for (size_t i = 0; i < a.held_out.size(); ++i) EXPECT_EQ(a.held_out[i].rows, b.held_out[i].rows);
  DevMixConfig other = small_config();
  other.seed = 2;
  const DevMix c = make_dev_mix(other, word_tokenizer(40), dev_documents());
  EXPECT_NE(a.held_out[0].context, c.held_out[0].context);
}

TEST(DevMix, BadConfigurations) {
  const eval::TaskTokenizer tok = word_tokenizer(40);
  DevMixConfig c = small_config();
  c.prompts = 13;
  EXPECT_KASCADE_ERROR(make_dev_mix(c, tok, dev_documents()), "must be even");
  c.prompts = 10;
  EXPECT_KASCADE_ERROR(make_dev_mix(c, tok, dev_documents()), "10 prompts are too few for 3 kinds (at least 12");
  c = small_config();
  c.continuation_rows = 199;
  EXPECT_KASCADE_ERROR(make_dev_mix(c, tok, dev_documents()), "continuation rows must be in 1..198");
  c = small_config();
  EXPECT_KASCADE_ERROR(make_dev_mix(c, tok, {}), "continuation needs natural-text documents");
  std::vector<eval::Document> eval_docs = eval::natural_text(eval::Split::Eval);
  EXPECT_KASCADE_ERROR(make_dev_mix(c, tok, eval_docs), "is not from the dev split");
  c.kinds = {DevKind::Retrieval};
  c.prompts = 4;
  EXPECT_EQ(make_dev_mix(c, tok, {}).held_out.size(), 2u);  // no continuation: no documents needed
  c.length = 20;
  EXPECT_THROW(make_dev_mix(c, tok, {}), kascade::Error);  // the tasks cannot fit 20 tokens
  EXPECT_KASCADE_ERROR(parse_dev_kind("qa", "--kinds"), "--kinds: expected retrieval, copy or continuation, got 'qa'");
}
