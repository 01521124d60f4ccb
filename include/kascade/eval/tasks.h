// kascade/eval/tasks.h — long-context tasks built with the model's own tokenizer at an exact
// prompt length, with a known answer: synthetic RULER-style retrieval and a copy task on natural
// text.
//
// An example is three token sequences: the context (BOS, instructions, the haystack with the
// facts hidden in it), the query (the question and the start of the answer sentence) and the
// answer. context + query is exactly `length` tokens. Values that must be copied (numbers,
// UUIDs, names, words) are tokenized on their own both where they appear in the context and in
// the answer, so that the answer's tokens are the ones the model can copy.
//
//   kascade::eval::TaskTokenizer tt{[&](const std::string& s) { return tok.encode(s, false); }, bos};
//   kascade::eval::Example ex = kascade::eval::make_example("passkey", 2048, /*index=*/0, /*seed=*/1, tt,
//                                                           kascade::eval::Split::Eval);
//   // ex.context.size() + ex.query.size() == 2048; ex.answer: the expected continuation
//
// Tasks (names as the CLI spells them):
//   passkey        a 5-digit pass key in repeated filler text (the classic passkey test)
//   niah-single    one "special magic number" for a key, hidden in varied filler sentences
//   niah-multikey  four such numbers for four keys; the question asks for one
//   vartrack       a chain of variable assignments VAR A = n, VAR B = VAR A, ... (multi-hop)
//   kv-uuid        a JSON object of UUID keys and values; the value of one key
//   common-words   a list of words where three are frequent; the three in order of frequency
//   copy           natural text (corpus.h) in which a passage of kCopyQueryTokens +
//                  kCopyAnswerTokens tokens from elsewhere in the same split is inserted; at the
//                  end of the context the passage starts again: the query is a paragraph break
//                  and its first kCopyQueryTokens tokens, the answer its remaining tokens.
// Splits: Split::Eval for reported evaluations, Split::Dev for calibration. For every task the
// split selects its own PRNG stream (eval: the streams examples had before splits existed); the
// copy task also takes its text from that split of the corpus, which never shares a paragraph
// with the other (corpus.h).
// The same (task, length, index, seed, split) gives the same example on every platform (own
// PRNG; the copy task also needs the same corpus packages).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kascade/eval/corpus.h"

namespace kascade::eval {

// Copy task: tokens of the repeat given as the query (after a paragraph break) and scored.
constexpr int kCopyQueryTokens = 8;
constexpr int kCopyAnswerTokens = 32;
// Copy task: the passage sits at a depth drawn uniformly from [0, kCopyMaxDepth) of the text
// before its repeat, so that at least a fifth of that text separates the two.
constexpr double kCopyMaxDepth = 0.8;

// Text to token ids without special-token parsing, and the BOS id to start the context with
// (-1: none). `decode` (optional) spells the copy task's answer for reports.
struct TaskTokenizer {
  std::function<std::vector<int32_t>(const std::string&)> encode;
  int32_t bos = -1;
  std::function<std::string(const std::vector<int32_t>&)> decode = nullptr;
};

struct Example {
  std::string task;
  int length = 0;  // context + query tokens
  int index = 0;
  uint64_t seed = 0;
  Split split = Split::Eval;
  std::vector<int32_t> context;
  std::vector<int32_t> query;
  std::vector<int32_t> answer;
  std::string answer_text;  // what the answer tokens spell (for reports)
};

const std::vector<std::string>& task_names();
// Throws kascade::Error for an unknown task, a length too short for the task's fixed parts, or
// (copy) a corpus that is missing or too short for the length.
Example make_example(const std::string& task, int length, int index, uint64_t seed, const TaskTokenizer& tok,
                     Split split = Split::Eval);

// A small deterministic PRNG (splitmix64), the same on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform in [0, bound), bound >= 1.
  uint64_t below(uint64_t bound);
  double uniform();  // [0, 1)

 private:
  uint64_t state_;
};

}  // namespace kascade::eval
