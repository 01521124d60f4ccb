// kascade/devset.h — the development prompts that calibration (SPEC 6) runs the dense model over.
//
// The built-in set is generated locally and deliberately unlike the evaluation tasks (no pass
// keys, needles, UUIDs or word lists): multi-hop question answering over a synthetic world.
// Each prompt is a long document of fact sentences about invented people, companies and cities
// (birthplace, employer, mentor, age, profession, headquarters), interleaved with questions whose
// answers need two facts stated earlier, often far apart ("Where was the mentor of X born?"
// needs "Y is the mentor of X" and "Y was born in Z"). That is the attention pattern Kascade has
// to preserve: a query reaching back for a few specific keys of a long context.
//
// Everything is a pure function of (seed, prompt index): the same arguments give the same text
// on every platform (a SplitMix64 stream, no std:: distributions). The length is measured with
// the caller's token counter (the model's tokenizer in `kascade calibrate`), so this header does
// not depend on the engine:
//
//   kascade::DevPrompt p = kascade::make_dev_prompt(/*seed=*/1, /*index=*/0, /*min_tokens=*/2048,
//       [&](const std::string& s) { return static_cast<int64_t>(tok.encode(s).size()); });
//   // p.text has at least 2048 tokens; cut its ids to exactly 2048 for a fixed-length prompt.
//
// read_dev_set_jsonl() reads a user's own development set: one JSON object {"text": "..."} per
// line (blank lines allowed), strictly: any other key, a non-string text or an empty text is an
// error naming the file and the line.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kascade {

// Number of tokens of a text (the model's tokenizer, without BOS).
using TokenCounter = std::function<int64_t(const std::string&)>;

// A question of a built-in prompt, with the two facts that answer it.
struct DevQuestion {
  std::string question;            // "Question: Where was the mentor of Ada Quillon born?"
  std::string answer;              // "Varnholt"
  std::string first_fact;          // "Tomas Brell is the mentor of Ada Quillon."
  std::string second_fact;         // "Tomas Brell was born in Varnholt."
  size_t question_offset = 0;      // byte offset of the question in DevPrompt::text
};

struct DevPrompt {
  std::string text;
  int64_t tokens = 0;              // counter(text)
  int64_t fact_sentences = 0;
  std::vector<DevQuestion> questions;
};

// Prompt `index` of the built-in set for `seed`: blocks of facts and questions are appended until
// the counter gives at least min_tokens (min_tokens >= 1). The text ends after a whole block, so
// it exceeds min_tokens by less than one block (a few hundred tokens at most).
DevPrompt make_dev_prompt(uint64_t seed, int index, int64_t min_tokens, const TokenCounter& count_tokens);

// A short description of the built-in set for provenance ("builtin multi-hop QA v1, seed 1").
std::string builtin_dev_set_name(uint64_t seed);

// The texts of a JSONL development set, in file order.
std::vector<std::string> read_dev_set_jsonl(const std::string& path);

}  // namespace kascade
