// Synthetic long-context tasks (kascade/eval/tasks.h): exact lengths, determinism, the answer
// present in the context, with a toy tokenizer and with the default model's own.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "kascade/engine/gguf.h"
#include "kascade/engine/model_path.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"
#include "kascade/eval/tasks.h"

namespace kascade::eval {
namespace {

// One token per whitespace-separated word piece (a word keeps its leading space), ids from a
// growing dictionary: enough structure for lengths and answer positions.
class ToyTokenizer {
 public:
  std::vector<int32_t> encode(const std::string& s) {
    std::vector<int32_t> out;
    size_t i = 0;
    while (i < s.size()) {
      size_t j = i + 1;
      while (j < s.size() && s[j] != ' ') ++j;
      const std::string piece = s.substr(i, j - i);
      auto it = ids_.find(piece);
      if (it == ids_.end()) it = ids_.emplace(piece, static_cast<int32_t>(ids_.size()) + 10).first;
      out.push_back(it->second);
      i = j;
    }
    return out;
  }

 private:
  std::map<std::string, int32_t> ids_;
};

TaskTokenizer toy(ToyTokenizer& t) {
  return TaskTokenizer{[&t](const std::string& s) { return t.encode(s); }, 1};
}

bool contains(const std::vector<int32_t>& haystack, const std::vector<int32_t>& needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) != haystack.end();
}

TEST(Tasks, EveryTaskHasTheExactLength) {
  ToyTokenizer t;
  for (const std::string& task : task_names()) {
    for (int length : {300, 1024, 1500, 2048}) {
      const Example ex = make_example(task, length, 0, 7, toy(t));
      EXPECT_EQ(ex.context.size() + ex.query.size(), static_cast<size_t>(length)) << task;
      EXPECT_EQ(ex.context.front(), 1) << task << ": the context starts with BOS";
      EXPECT_FALSE(ex.answer.empty()) << task;
      EXPECT_EQ(ex.task, task);
      EXPECT_EQ(ex.length, length);
    }
  }
}

TEST(Tasks, TheSameSeedGivesTheSameExampleAndOthersDiffer) {
  ToyTokenizer t;
  for (const std::string& task : task_names()) {
    const Example a = make_example(task, 800, 3, 11, toy(t));
    const Example b = make_example(task, 800, 3, 11, toy(t));
    EXPECT_EQ(a.context, b.context) << task;
    EXPECT_EQ(a.answer, b.answer) << task;
    const Example other_index = make_example(task, 800, 4, 11, toy(t));
    const Example other_seed = make_example(task, 800, 3, 12, toy(t));
    EXPECT_NE(a.context, other_index.context) << task;
    EXPECT_NE(a.context, other_seed.context) << task;
  }
}

TEST(Tasks, RetrievalAnswersAreInTheContext) {
  ToyTokenizer t;
  for (const char* task : {"passkey", "niah-single", "niah-multikey", "vartrack", "kv-uuid"}) {
    for (int index = 0; index < 5; ++index) {
      const Example ex = make_example(task, 1200, index, 1, toy(t));
      EXPECT_TRUE(contains(ex.context, ex.answer)) << task << " #" << index << ": " << ex.answer_text;
      EXPECT_FALSE(contains(ex.query, ex.answer)) << task << ": the question must not give the answer away";
    }
  }
}

TEST(Tasks, MultikeyHidesFourNumbersAndAsksForOne) {
  ToyTokenizer t;
  const Example ex = make_example("niah-multikey", 1000, 0, 1, toy(t));
  const std::vector<int32_t> marker = t.encode(" One of the special magic numbers for");
  int found = 0;
  for (auto it = ex.context.begin();
       (it = std::search(it, ex.context.end(), marker.begin(), marker.end())) != ex.context.end(); ++it) {
    ++found;
  }
  EXPECT_EQ(found, 4);
}

TEST(Tasks, CommonWordsAnswerIsTheThreeMostFrequentInOrder) {
  ToyTokenizer t;
  for (int index = 0; index < 4; ++index) {
    const Example ex = make_example("common-words", 3000, index, 5, toy(t));
    std::map<int32_t, int> counts;
    for (int32_t id : ex.context) ++counts[id];
    std::vector<std::pair<int, int32_t>> by_count;
    for (const auto& [id, n] : counts) by_count.push_back({n, id});
    std::sort(by_count.rbegin(), by_count.rend());
    ASSERT_EQ(ex.answer.size(), 3u);
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(ex.answer[i], by_count[i].second) << "rank " << i;
  }
}

TEST(Tasks, NeedlesSitAtDifferentDepths) {
  ToyTokenizer t;
  std::set<size_t> positions;
  for (int index = 0; index < 8; ++index) {
    const Example ex = make_example("passkey", 2000, index, 1, toy(t));
    const auto at = std::search(ex.context.begin(), ex.context.end(), ex.answer.begin(), ex.answer.end());
    positions.insert(static_cast<size_t>(at - ex.context.begin()) * 10 / ex.context.size());
  }
  EXPECT_GE(positions.size(), 4u) << "passkeys should be spread over the context";
}

TEST(Tasks, ErrorsNameTheProblem) {
  ToyTokenizer t;
  try {
    make_example("passkey", 20, 0, 1, toy(t));
    FAIL() << "a 20-token passkey example cannot hold its fixed parts";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("too short"), std::string::npos) << e.what();
  }
  try {
    make_example("haystack", 1000, 0, 1, toy(t));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown task 'haystack'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_example("passkey", 1000, -1, 1, toy(t)), Error);
}

TEST(Tasks, RealTokenizerExactLengthsAndAnswersPresent) {
  const engine::GgufFile gguf = engine::GgufFile::open(engine::resolve_model_path("default"));
  const engine::Tokenizer tok = engine::Tokenizer::from_gguf(gguf);
  const TaskTokenizer tt{[&tok](const std::string& s) { return tok.encode(s, false); },
                         tok.add_bos() ? tok.bos_id() : -1};
  for (const std::string& task : task_names()) {
    for (int length : {1024, 2048}) {
      const Example ex = make_example(task, length, 0, 1, tt);
      EXPECT_EQ(ex.context.size() + ex.query.size(), static_cast<size_t>(length)) << task;
      EXPECT_EQ(tok.decode(ex.answer), (task == "kv-uuid" ? "" : " ") + ex.answer_text) << task;
      if (task != "common-words") {
        EXPECT_TRUE(contains(ex.context, ex.answer)) << task;
      }
    }
  }
}

}  // namespace
}  // namespace kascade::eval
