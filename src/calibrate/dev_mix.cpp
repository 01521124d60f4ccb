// The development set of calibration: retrieval, copy and continuation examples from the dev
// split, paired into statistics and held-out halves (kascade/calibrate/dev_mix.h).
#include "kascade/calibrate/dev_mix.h"

#include <algorithm>
#include <sstream>

#include "kascade/error.h"

namespace kascade {

const char* to_string(DevKind kind) {
  switch (kind) {
    case DevKind::Retrieval: return "retrieval";
    case DevKind::Copy: return "copy";
    case DevKind::Continuation: return "continuation";
  }
  KASCADE_FAIL("to_string: unknown DevKind " << static_cast<int>(kind));
}

DevKind parse_dev_kind(const std::string& text, const std::string& what) {
  for (DevKind k : {DevKind::Retrieval, DevKind::Copy, DevKind::Continuation})
    if (text == to_string(k)) return k;
  KASCADE_FAIL(what << ": expected retrieval, copy or continuation, got '" << text << "'");
}

std::vector<int32_t> DevExample::prompt() const {
  std::vector<int32_t> out = context;
  out.insert(out.end(), rows.begin(), rows.begin() + first_answer_row + 1);
  return out;
}

const std::vector<std::string>& dev_retrieval_tasks() {
  static const std::vector<std::string> tasks = {"passkey", "niah-single", "niah-multikey",
                                                 "vartrack", "kv-uuid",   "common-words"};
  return tasks;
}

namespace {

// A task example as rows: the question and the answer but its last token, each predicting the next.
DevExample from_task(const eval::Example& ex, DevKind kind, const std::string& name) {
  KASCADE_CHECK(!ex.query.empty() && !ex.answer.empty(), "dev set: " << name << " has an empty question or answer");
  DevExample d;
  d.kind = kind;
  d.name = name;
  d.context = ex.context;
  d.rows = ex.query;
  d.rows.insert(d.rows.end(), ex.answer.begin(), ex.answer.end() - 1);
  d.targets.assign(ex.query.begin() + 1, ex.query.end());
  d.targets.insert(d.targets.end(), ex.answer.begin(), ex.answer.end());
  d.first_answer_row = static_cast<int>(ex.query.size()) - 1;
  return d;
}

// Positions a task example fills when scored as rows: context, question, answer but its last token.
size_t scored_positions(const eval::Example& ex) {
  return ex.context.size() + ex.query.size() + ex.answer.size() - 1;
}

// A task example of `length` tokens of context + question, drawn again shorter while its scored
// rows pass `max_positions` (0: no limit). The answer's length varies between draws, so a few
// tries may be needed; each shortens by the last overshoot and one more token.
eval::Example fitted_example(const std::string& task, int length, int index, uint64_t seed, const eval::TaskTokenizer& tok,
                             int max_positions) {
  eval::Example ex = eval::make_example(task, length, index, seed, tok, eval::Split::Dev);
  int drawn = length;
  for (int tries = 0; max_positions > 0 && scored_positions(ex) > static_cast<size_t>(max_positions); ++tries) {
    KASCADE_CHECK(tries < 8, "dev set: task '" << task << "' example " << index << " at length " << length
                                               << " does not fit the model's " << max_positions
                                               << " positions with its answer");
    drawn -= static_cast<int>(scored_positions(ex) - static_cast<size_t>(max_positions)) + tries;
    ex = eval::make_example(task, drawn, index, seed, tok, eval::Split::Dev);
  }
  return ex;
}

// Document `index` of the split (then the next ones of the same source, joined by a paragraph
// break, wrapping) until there are `needed` ids after the BOS; cut to exactly that.
DevExample continuation(const std::vector<eval::Document>& docs, size_t index, int length, int continuation_rows,
                        const eval::TaskTokenizer& tok) {
  const eval::Document& first = docs[index];
  std::vector<int32_t> ids;
  if (tok.bos >= 0) ids.push_back(tok.bos);
  const size_t needed = static_cast<size_t>(length) + 1;  // the last row's target too
  size_t at = index;
  for (size_t joined = 0; ids.size() < needed; ++joined) {
    KASCADE_CHECK(joined < docs.size(), "dev set: the " << first.source << " documents together have fewer than "
                                                        << needed << " tokens");
    std::vector<int32_t> part = tok.encode((joined ? "\n\n" : "") + docs[at].text);
    ids.insert(ids.end(), part.begin(), part.end());
    do {
      at = (at + 1) % docs.size();
    } while (docs[at].source != first.source);
  }
  ids.resize(needed);
  DevExample d;
  d.kind = DevKind::Continuation;
  d.name = "continuation " + first.id;
  const size_t context = static_cast<size_t>(length - continuation_rows);
  d.context.assign(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(context));
  d.rows.assign(ids.begin() + static_cast<std::ptrdiff_t>(context), ids.begin() + length);
  d.targets.assign(ids.begin() + static_cast<std::ptrdiff_t>(context) + 1, ids.end());
  d.first_answer_row = 0;
  return d;
}

}  // namespace

DevMix make_dev_mix(const DevMixConfig& c, const eval::TaskTokenizer& tok, const std::vector<eval::Document>& documents) {
  KASCADE_CHECK(tok.encode != nullptr, "dev set: no tokenizer");
  KASCADE_CHECK(!c.kinds.empty(), "dev set: no kinds of prompts");
  const int kinds = static_cast<int>(c.kinds.size());
  KASCADE_CHECK(c.prompts >= 4 * kinds, "dev set: " << c.prompts << " prompts are too few for " << kinds
                                                    << " kinds (at least " << 4 * kinds
                                                    << ": two statistics and two held-out prompts of each)");
  const std::vector<int> held_lengths = c.held_out_lengths.empty() ? std::vector<int>{c.length} : c.held_out_lengths;
  int shortest = c.length;
  for (int length : held_lengths) shortest = std::min(shortest, length);
  KASCADE_CHECK(shortest >= 2, "dev set: lengths must be >= 2, got " << shortest);
  bool continuation_wanted = false;
  for (DevKind k : c.kinds) continuation_wanted = continuation_wanted || k == DevKind::Continuation;
  if (continuation_wanted) {
    KASCADE_CHECK(c.continuation_rows >= 1 && c.continuation_rows <= shortest - 2,
                  "dev set: continuation rows must be in 1.." << shortest - 2 << " for length " << shortest << ", got "
                                                              << c.continuation_rows);
    KASCADE_CHECK(!documents.empty(), "dev set: continuation needs natural-text documents, none were given");
    for (const eval::Document& d : documents)
      KASCADE_CHECK(d.split == eval::Split::Dev, "dev set: document " << d.id << " is not from the dev split");
  }
  KASCADE_CHECK(c.prompts % 2 == 0, "dev set: the prompt count must be even (half statistics, half held out), got "
                                          << c.prompts);
  const int pairs = c.prompts / 2;
  // Examples of each kind so far (pairs of the kind times two), to number them and spread them
  // over tasks and documents.
  std::vector<int> pairs_of_kind(static_cast<size_t>(kinds), 0);
  for (int p = 0; p < pairs; ++p) ++pairs_of_kind[static_cast<size_t>(p % kinds)];
  std::vector<int> seen(static_cast<size_t>(kinds), 0);
  DevMix mix;
  for (int i = 0; i < 2 * pairs; ++i) {
    const int pair = i / 2, role = i % 2, slot = pair % kinds;
    const DevKind kind = c.kinds[static_cast<size_t>(slot)];
    const int kind_pair = seen[static_cast<size_t>(slot)] / 2;
    const int kind_example = seen[static_cast<size_t>(slot)]++;
    // Each round of kinds takes the next held-out length.
    const int length = role == 0 ? c.length : held_lengths[static_cast<size_t>(pair / kinds) % held_lengths.size()];
    const std::string at = held_lengths.size() > 1 || held_lengths[0] != c.length ? " @" + std::to_string(length) : "";
    DevExample ex;
    if (kind == DevKind::Retrieval) {
      const std::string& task = dev_retrieval_tasks()[static_cast<size_t>(kind_pair) % dev_retrieval_tasks().size()];
      ex = from_task(fitted_example(task, length, i, c.seed, tok, role == 1 ? c.max_positions : 0), kind,
                     task + " #" + std::to_string(i) + at);
    } else if (kind == DevKind::Copy) {
      ex = from_task(fitted_example("copy", length, i, c.seed, tok, role == 1 ? c.max_positions : 0), kind,
                     "copy #" + std::to_string(i) + at);
    } else {
      // Spread the kind's examples evenly over the documents (and so over the sources).
      const size_t total = static_cast<size_t>(2 * pairs_of_kind[static_cast<size_t>(slot)]);
      ex = continuation(documents, static_cast<size_t>(kind_example) * documents.size() / total, length,
                        c.continuation_rows, tok);
      ex.name += at;
    }
    (role == 0 ? mix.statistics : mix.held_out).push_back(std::move(ex));
  }
  std::ostringstream d;
  d << "dev split, seed " << c.seed << ": " << mix.statistics.size() << " statistics prompts of " << c.length
    << " tokens + " << mix.held_out.size() << " held-out prompts of ";
  for (size_t l = 0; l < held_lengths.size(); ++l) d << (l ? ", " : "") << held_lengths[l];
  d << " tokens (";
  for (int k = 0; k < kinds; ++k) {
    d << (k ? ", " : "") << to_string(c.kinds[static_cast<size_t>(k)]) << " " << pairs_of_kind[static_cast<size_t>(k)]
      << " + " << pairs_of_kind[static_cast<size_t>(k)];
  }
  if (continuation_wanted) d << "; continuation scores the last " << c.continuation_rows << " tokens";
  d << ")";
  mix.description = d.str();
  return mix;
}

}  // namespace kascade
