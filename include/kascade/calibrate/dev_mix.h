// kascade/calibrate/dev_mix.h — the development set that calibration measures plans on
// (issue 14): long-range retrieval, repeated passages and plain continuation of natural text in
// equal parts, all from the development split (eval/tasks.h and eval/corpus.h, Split::Dev), which
// never meets the evaluation split. Half of the prompts compute the statistics that propose
// plans, the other half is held out and scores them.
//
//   kascade::eval::TaskTokenizer tt{[&](const std::string& s) { return tok.encode_continuation(s); },
//                                   tok.add_bos() ? tok.bos_id() : -1};
//   kascade::DevMixConfig cfg;                     // 64 prompts of 2048 tokens, seed 1
//   kascade::DevMix mix = kascade::make_dev_mix(cfg, tt, kascade::eval::natural_text(kascade::eval::Split::Dev));
//   for (const kascade::DevExample& ex : mix.held_out) { ex.context; ex.rows; ex.targets; ... }
//
// Each example is a context (prefilled densely) and scored rows after it (decode rows), each
// row predicting its target:
//   retrieval     a synthetic task (passkey, niah-single, niah-multikey, vartrack, kv-uuid,
//                 common-words in turn): rows = the question and the answer but its last token,
//                 targets = the question's next tokens and the answer; the answer rows are those
//                 predicting answer tokens.
//   copy          the copy task (a passage of natural text repeated at the end): the same layout.
//   continuation  a natural-text document cut to `length` tokens (BOS first): the last
//                 `continuation_rows` tokens are the rows, each predicting the next token of the
//                 text (every row is an answer row).
// Example i of the set belongs to pair i / 2, whose kind is kinds[(i / 2) % kinds]; the first of
// a pair computes statistics, the second is held out, so both halves hold every kind equally
// (up to one pair). Statistics prompts have `length` tokens (their statistics are computed on the
// host, quadratic in the length); held-out prompts take the lengths of `held_out_lengths` in
// turn, each round of kinds at the next length, so that the loss that chooses a plan covers the
// lengths it will run at. Everything is a pure function of the config and the corpus.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kascade/eval/corpus.h"
#include "kascade/eval/tasks.h"

namespace kascade {

enum class DevKind { Retrieval, Copy, Continuation };
const char* to_string(DevKind kind);                                   // "retrieval", "copy", "continuation"
DevKind parse_dev_kind(const std::string& text, const std::string& what);

struct DevExample {
  DevKind kind = DevKind::Retrieval;
  std::string name;              // "passkey #4", "copy #1", "continuation jargon/dev/3"
  std::vector<int32_t> context;  // prefilled densely (BOS first when the model has one)
  std::vector<int32_t> rows;     // decode rows after the context
  std::vector<int32_t> targets;  // targets[r]: the token row r predicts
  int first_answer_row = 0;      // rows first_answer_row.. predict the answer (answer log-loss)
  // What the model sees before it answers: the context and rows 0..first_answer_row (the
  // statistics' prompt, after which the answer is generated).
  std::vector<int32_t> prompt() const;
};

struct DevMixConfig {
  int prompts = 64;              // statistics + held out: even, at least 4 per kind
  int length = 2048;             // tokens of context + rows (tasks: context + question, as eval)
  std::vector<int> held_out_lengths;  // the held-out prompts' lengths in turn (empty: `length`)
  int continuation_rows = 32;    // scored rows of a continuation example
  uint64_t seed = 1;             // the tasks' seed (always with Split::Dev)
  // Positions the model holds (0: no limit). A held-out task prompt is scored over its answer
  // rows too, so one whose context, question and answer rows would pass this is drawn again
  // shorter until they fit: at the model's full context the question ends early enough for the
  // answer (eval's lengths count context + question only).
  int max_positions = 0;
  std::vector<DevKind> kinds = {DevKind::Retrieval, DevKind::Copy, DevKind::Continuation};
};

struct DevMix {
  std::vector<DevExample> statistics;
  std::vector<DevExample> held_out;
  // "dev split, seed 1: 32 statistics prompts of 2048 tokens + 32 held-out prompts of 1024, 2048,
  // 4096, 8192 tokens (retrieval 11 + 11, ...)"
  std::string description;
};

// The retrieval tasks in the order examples take them.
const std::vector<std::string>& dev_retrieval_tasks();

// Builds the set. `documents` is the development split of the corpus (natural_text(Split::Dev));
// it is read only for continuation examples, and the copy task reads the corpus itself. Throws
// kascade::Error naming the problem: an odd count or fewer than four prompts per kind, a length the tasks cannot
// fill, continuation rows outside 1..length-2 (of the shortest length), no documents, or a
// missing corpus.
DevMix make_dev_mix(const DevMixConfig& config, const eval::TaskTokenizer& tok,
                    const std::vector<eval::Document>& documents);

}  // namespace kascade
