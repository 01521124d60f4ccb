// Long-context tasks (kascade/eval/tasks.h): exact lengths, determinism, the answer present in
// the context, the copy task's repeat and splits, with a toy tokenizer and the default model's own.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <string>

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
      if (it == ids_.end()) {
        it = ids_.emplace(piece, static_cast<int32_t>(ids_.size()) + 10).first;
        pieces_.push_back(piece);
      }
      out.push_back(it->second);
      i = j;
    }
    return out;
  }
  std::string decode(const std::vector<int32_t>& ids) const {
    std::string text;
    for (int32_t id : ids) text += pieces_.at(static_cast<size_t>(id - 10));
    return text;
  }

 private:
  std::map<std::string, int32_t> ids_;
  std::vector<std::string> pieces_;  // by id - 10
};

TaskTokenizer toy(ToyTokenizer& t) {
  return TaskTokenizer{[&t](const std::string& s) { return t.encode(s); }, 1,
                       [&t](const std::vector<int32_t>& ids) { return t.decode(ids); }};
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
                         tok.add_bos() ? tok.bos_id() : -1,
                         [&tok](const std::vector<int32_t>& ids) { return tok.decode(ids); }};
  for (const std::string& task : task_names()) {
    for (int length : {1024, 2048}) {
      const Example ex = make_example(task, length, 0, 1, tt);
      EXPECT_EQ(ex.context.size() + ex.query.size(), static_cast<size_t>(length)) << task;
      EXPECT_EQ(tok.decode(ex.answer), (task == "kv-uuid" || task == "copy" ? "" : " ") + ex.answer_text) << task;
      if (task != "common-words") {
        EXPECT_TRUE(contains(ex.context, ex.answer)) << task;
      }
    }
  }
}

TEST(Tasks, SplitsDrawDifferentExamplesAndEachIsDeterministic) {
  ToyTokenizer t;
  for (const std::string& task : task_names()) {
    const Example eval = make_example(task, 900, 2, 3, toy(t), Split::Eval);
    const Example dev = make_example(task, 900, 2, 3, toy(t), Split::Dev);
    EXPECT_EQ(eval.split, Split::Eval);
    EXPECT_EQ(dev.split, Split::Dev);
    EXPECT_NE(eval.context, dev.context) << task;
    EXPECT_EQ(make_example(task, 900, 2, 3, toy(t), Split::Dev).context, dev.context) << task;
    // Eval is the default: the streams examples had before splits existed.
    EXPECT_EQ(make_example(task, 900, 2, 3, toy(t)).context, eval.context) << task;
  }
}

// The cleaned paragraphs of every corpus source's split (what the copy task reads).
std::set<std::string> split_paragraphs(Split split) {
  std::set<std::string> all;
  for (const CorpusSource& source : natural_text_sources()) {
    for (std::string& p : natural_text_paragraphs(source, split)) all.insert(std::move(p));
  }
  return all;
}

// `text` cut at every paragraph break "\n\n" (the first piece is whatever precedes the first break).
std::vector<std::string> paragraphs_of(const std::string& text) {
  std::vector<std::string> out;
  size_t at = 0;
  for (size_t next; (next = text.find("\n\n", at)) != std::string::npos; at = next + 2) out.push_back(text.substr(at, next - at));
  out.push_back(text.substr(at));
  return out;
}

TEST(CopyTask, TheRepeatIsTheEarlierPassageAtTheExactLength) {
  ToyTokenizer t;
  const std::vector<int32_t> paragraph_break = t.encode("\n\n");
  for (int length : {300, 1000, 4096}) {
    for (int index = 0; index < 3; ++index) {
      const Example ex = make_example("copy", length, index, 1, toy(t));
      ASSERT_EQ(ex.context.size() + ex.query.size(), static_cast<size_t>(length));
      ASSERT_EQ(ex.query.size(), 1u + kCopyQueryTokens);
      ASSERT_EQ(ex.answer.size(), static_cast<size_t>(kCopyAnswerTokens));
      EXPECT_EQ(ex.query[0], paragraph_break[0]) << "the repeat starts a paragraph";
      EXPECT_EQ(ex.answer_text, t.decode(ex.answer));
      // The repeat (query after its break, then the answer) is in the context exactly once, as
      // a paragraph of its own, before the query.
      std::vector<int32_t> passage(ex.query.begin(), ex.query.end());
      passage.insert(passage.end(), ex.answer.begin(), ex.answer.end());
      int found = 0;
      for (auto it = ex.context.begin();
           (it = std::search(it, ex.context.end(), passage.begin(), passage.end())) != ex.context.end(); ++it) {
        ++found;
      }
      EXPECT_EQ(found, 1) << "length " << length << " #" << index;
      EXPECT_FALSE(contains(ex.query, ex.answer));
    }
  }
}

TEST(CopyTask, TextAndPassageComeFromTheExamplesSplit) {
  ToyTokenizer t;
  const std::set<std::string> dev = split_paragraphs(Split::Dev), eval = split_paragraphs(Split::Eval);
  for (Split split : {Split::Dev, Split::Eval}) {
    const std::set<std::string>& mine = split == Split::Dev ? dev : eval;
    const std::set<std::string>& other = split == Split::Dev ? eval : dev;
    for (int index = 0; index < 3; ++index) {
      const Example ex = make_example("copy", 2000, index, 1, toy(t), split);
      const std::string passage = t.decode(std::vector<int32_t>(ex.query.begin() + 1, ex.query.end())) + ex.answer_text;
      // The passage is the start of a paragraph of this split and occurs in no paragraph of the other.
      bool starts_mine = false;
      for (const std::string& p : mine) starts_mine = starts_mine || p.compare(0, passage.size(), passage) == 0;
      EXPECT_TRUE(starts_mine) << to_string(split) << " #" << index << ": " << passage;
      for (const std::string& p : other) ASSERT_EQ(p.find(passage), std::string::npos) << passage;
      // Every whole paragraph of the haystack (all but the cut last one) is a paragraph of this
      // split, except the inserted passage; BOS is not part of the text.
      const std::vector<std::string> pieces =
          paragraphs_of(t.decode(std::vector<int32_t>(ex.context.begin() + 1, ex.context.end())));
      ASSERT_GE(pieces.size(), 4u);
      int whole = 0;
      for (size_t i = 1; i + 1 < pieces.size(); ++i) {
        if (pieces[i] == passage) continue;
        EXPECT_EQ(mine.count(pieces[i]), 1u) << to_string(split) << " #" << index << ": " << pieces[i];
        ++whole;
      }
      EXPECT_GE(whole, 2);
    }
  }
}

TEST(CopyTask, ErrorsNameTheProblem) {
  ToyTokenizer t;
  try {
    make_example("copy", 40, 0, 1, toy(t));
    FAIL() << "a 40-token copy example cannot hold the passage and its repeat";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("too short"), std::string::npos) << e.what();
  }
  // No corpus under the root: the error names the package to install.
  const std::string empty = (std::filesystem::temp_directory_path() / "kascade_no_corpus").string();
  std::filesystem::create_directories(empty);
  setenv("KASCADE_CORPUS_ROOT", empty.c_str(), 1);
  try {
    make_example("copy", 1000, 0, 1, toy(t));
    unsetenv("KASCADE_CORPUS_ROOT");
    FAIL() << "a missing corpus was accepted";
  } catch (const Error& e) {
    unsetenv("KASCADE_CORPUS_ROOT");
    EXPECT_NE(std::string(e.what()).find("jargon-text"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kascade::eval
