// Long-context tasks at exact token lengths (see kascade/eval/tasks.h).
//
// Every task is built the same way: fixed parts (instructions, the question) and "needles"
// (the facts to find) are tokenized first; the haystack is filled with filler items up to the
// exact remaining budget (the last item cut to fit), and the needles are inserted between
// filler items at depths drawn from the example's PRNG. The copy task's filler items are the
// paragraphs of natural text and its needle is the passage that is repeated.
#include "kascade/eval/tasks.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "kascade/error.h"

namespace kascade::eval {

uint64_t Rng::next() {
  state_ += 0x9e3779b97f4a7c15ull;
  uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Rng::below(uint64_t bound) { return next() % bound; }

double Rng::uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }

namespace {

using Tokens = std::vector<int32_t>;

const std::vector<std::string>& words(const char* kind) {
  static const std::vector<std::string> subjects = {
      "The old farmer", "A young teacher", "The tired sailor", "My neighbour", "The careful baker", "A quiet student",
      "The village doctor", "Our guide", "The painter", "A travelling merchant", "The librarian", "The blacksmith"};
  static const std::vector<std::string> verbs = {"carried", "painted", "found", "repaired", "described", "sold",
                                                 "watched", "cleaned", "borrowed", "measured", "planted", "counted"};
  static const std::vector<std::string> objects = {
      "a basket of apples", "the wooden fence", "an old map", "the broken clock", "a small boat", "the garden wall",
      "a box of letters", "the long ladder", "a copper kettle", "the stone bridge", "a bag of flour", "the red door"};
  static const std::vector<std::string> endings = {
      "in the morning", "before the rain came", "near the river", "after the long winter", "on the market day",
      "while the bells rang", "at the edge of the forest", "during the festival", "with great patience",
      "under a grey sky", "for the whole afternoon", "without saying a word"};
  static const std::vector<std::string> adjectives = {"quiet", "bright", "hollow", "silver", "crooked", "gentle",
                                                      "frozen", "golden", "hidden", "rapid", "distant", "wild"};
  static const std::vector<std::string> nouns = {"harbor", "meadow", "lantern", "falcon", "orchard", "canyon",
                                                 "violin", "glacier", "compass", "thistle", "beacon", "quarry"};
  // Frequent English words; the common-words task keeps those that are one token.
  static const std::vector<std::string> common = {
      "apple",  "river",  "house",  "green",  "water",  "table", "music", "paper",  "stone",  "light",
      "horse",  "bread",  "chair",  "cloud",  "dream",  "field", "glass", "heart",  "money",  "night",
      "ocean",  "plant",  "queen",  "smile",  "train",  "voice", "watch", "world",  "sugar",  "tiger",
      "bird",   "book",   "cake",   "door",   "fish",   "gold",  "hand",  "king",   "lamp",   "moon",
      "nose",   "road",   "ship",   "snow",   "star",   "tree",  "wind",  "wolf",   "rain",   "milk",
      "coat",   "farm",   "fire",   "hill",   "lake",   "rock",  "sand",  "seed",   "song",   "town",
      "wall",   "wood",   "bell",   "boat",   "corn",   "dust",  "frog",  "gate",   "leaf",   "salt"};
  const std::string k = kind;
  if (k == "subjects") return subjects;
  if (k == "verbs") return verbs;
  if (k == "objects") return objects;
  if (k == "endings") return endings;
  if (k == "adjectives") return adjectives;
  if (k == "nouns") return nouns;
  return common;
}

const std::string& pick(Rng& rng, const std::vector<std::string>& list) { return list[rng.below(list.size())]; }

// Builds one example: fixed parts, needles and filler to an exact length.
class Builder {
 public:
  Builder(const TaskTokenizer& tok, int length) : tok_(tok), length_(length) {}
  int length() const { return length_; }

  // Tokens of the parts, each tokenized on its own and concatenated.
  Tokens encode(std::initializer_list<std::string> parts) const {
    Tokens out;
    for (const std::string& p : parts) {
      const Tokens t = tok_.encode(p);
      out.insert(out.end(), t.begin(), t.end());
    }
    return out;
  }

  void header(Tokens t) { header_ = std::move(t); }
  void question(Tokens t) { question_ = std::move(t); }
  void answer(Tokens t, std::string text) {
    answer_ = std::move(t);
    answer_text_ = std::move(text);
  }
  // A needle at relative depth [0, 1] of the haystack (needles keep their order of depth).
  void needle(Tokens t, double depth) { needles_.push_back({depth, std::move(t)}); }

  // Fills the haystack with items from `filler` until the budget is met exactly, inserts the
  // needles and returns the finished example.
  Example finish(const std::string& task, int index, uint64_t seed, const std::function<Tokens()>& filler) {
    size_t fixed = header_.size() + question_.size() + (tok_.bos >= 0 ? 1 : 0);
    for (const auto& n : needles_) fixed += n.second.size();
    KASCADE_CHECK(fixed < static_cast<size_t>(length_), "task '" << task << "': length " << length_
                                                                 << " is too short (its fixed parts take " << fixed
                                                                 << " tokens)");
    const size_t budget = static_cast<size_t>(length_) - fixed;
    std::vector<Tokens> items;
    size_t filled = 0;
    while (filled < budget) {
      Tokens item = filler();
      KASCADE_CHECK(!item.empty(), "task '" << task << "': a filler item tokenized to nothing");
      if (filled + item.size() > budget) item.resize(budget - filled);
      filled += item.size();
      items.push_back(std::move(item));
    }
    std::stable_sort(needles_.begin(), needles_.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    Example ex;
    ex.task = task;
    ex.length = length_;
    ex.index = index;
    ex.seed = seed;
    if (tok_.bos >= 0) ex.context.push_back(tok_.bos);
    ex.context.insert(ex.context.end(), header_.begin(), header_.end());
    size_t next_needle = 0, position = 0;
    for (const Tokens& item : items) {
      // A needle goes before the first filler item that starts at or after its depth.
      while (next_needle < needles_.size() && position >= needles_[next_needle].first * static_cast<double>(filled)) {
        append(ex.context, needles_[next_needle++].second);
      }
      append(ex.context, item);
      position += item.size();
    }
    while (next_needle < needles_.size()) append(ex.context, needles_[next_needle++].second);
    ex.query = question_;
    ex.answer = answer_;
    ex.answer_text = answer_text_;
    KASCADE_CHECK(ex.context.size() + ex.query.size() == static_cast<size_t>(length_),
                  "task '" << task << "': built " << ex.context.size() + ex.query.size() << " tokens instead of "
                           << length_);
    KASCADE_CHECK(!ex.answer.empty(), "task '" << task << "': the answer tokenized to nothing");
    return ex;
  }

 private:
  static void append(Tokens& to, const Tokens& from) { to.insert(to.end(), from.begin(), from.end()); }

  const TaskTokenizer& tok_;
  int length_;
  Tokens header_, question_, answer_;
  std::string answer_text_;
  std::vector<std::pair<double, Tokens>> needles_;
};

std::string digits(Rng& rng, int count) {
  std::string s(1, static_cast<char>('1' + rng.below(9)));
  while (static_cast<int>(s.size()) < count) s += static_cast<char>('0' + rng.below(10));
  return s;
}

std::string uuid(Rng& rng) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int group : {8, 4, 4, 4, 12}) {
    if (!s.empty()) s += '-';
    for (int i = 0; i < group; ++i) s += hex[rng.below(16)];
  }
  return s;
}

std::string magic_key(Rng& rng) { return pick(rng, words("adjectives")) + "-" + pick(rng, words("nouns")); }

std::string variable_name(Rng& rng) {
  std::string s;
  for (int i = 0; i < 5; ++i) s += static_cast<char>('A' + rng.below(26));
  return s;
}

// Varied sentences, so that the haystack is not one repeated phrase.
std::function<Tokens()> essay_filler(const Builder& b, Rng& rng) {
  return [&b, &rng]() {
    return b.encode({" " + pick(rng, words("subjects")) + " " + pick(rng, words("verbs")) + " " +
                     pick(rng, words("objects")) + " " + pick(rng, words("endings")) + "."});
  };
}

Example passkey(Builder& b, Rng& rng) {
  const std::string key = digits(rng, 5);
  b.header(b.encode({"There is an important piece of information hidden inside a lot of irrelevant text. Find it and "
                     "memorize it. I will quiz you about it."}));
  b.needle(b.encode({" The pass key is", " " + key, ". Remember it.", " " + key, " is the pass key."}), rng.uniform());
  b.question(b.encode({" What is the pass key? The pass key is"}));
  b.answer(b.encode({" " + key}), key);
  const Tokens filler = b.encode({" The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."});
  return b.finish("passkey", 0, 0, [filler]() { return filler; });
}

Tokens magic_needle(const Builder& b, const std::string& key, const std::string& number) {
  return b.encode({" One of the special magic numbers for", " " + key, " is:", " " + number, "."});
}

Example niah(Builder& b, Rng& rng, int keys, const char* task) {
  std::vector<std::string> names, numbers;
  while (static_cast<int>(names.size()) < keys) {
    const std::string k = magic_key(rng);
    if (std::find(names.begin(), names.end(), k) != names.end()) continue;
    names.push_back(k);
    numbers.push_back(digits(rng, 7));
  }
  const size_t asked = rng.below(static_cast<uint64_t>(keys));
  b.header(b.encode({"Some special magic numbers are hidden within the following text. Make sure to memorize them. I "
                     "will quiz you about the numbers afterwards."}));
  for (int i = 0; i < keys; ++i) b.needle(magic_needle(b, names[static_cast<size_t>(i)], numbers[static_cast<size_t>(i)]), rng.uniform());
  b.question(b.encode({" What is the special magic number for", " " + names[asked],
                       "? The special magic number for", " " + names[asked], " is:"}));
  b.answer(b.encode({" " + numbers[asked]}), numbers[asked]);
  return b.finish(task, 0, 0, essay_filler(b, rng));
}

Example vartrack(Builder& b, Rng& rng) {
  constexpr int kHops = 3;
  std::vector<std::string> vars;
  while (static_cast<int>(vars.size()) < kHops + 1) {
    const std::string v = variable_name(rng);
    if (std::find(vars.begin(), vars.end(), v) == vars.end()) vars.push_back(v);
  }
  const std::string value = digits(rng, 5);
  b.header(b.encode({"Memorize and track the chain of variable assignments hidden in the following text."}));
  // The assignments appear in order of the chain, at increasing depths.
  std::vector<double> depths;
  for (int i = 0; i <= kHops; ++i) depths.push_back(rng.uniform());
  std::sort(depths.begin(), depths.end());
  b.needle(b.encode({" VAR", " " + vars[0], " =", " " + value, "."}), depths[0]);
  for (int i = 1; i <= kHops; ++i) {
    b.needle(b.encode({" VAR", " " + vars[static_cast<size_t>(i)], " = VAR", " " + vars[static_cast<size_t>(i - 1)], "."}),
             depths[static_cast<size_t>(i)]);
  }
  b.question(b.encode({" Question: What is the value of VAR", " " + vars[kHops], "? Answer: The value of VAR",
                       " " + vars[kHops], " is"}));
  b.answer(b.encode({" " + value}), value);
  return b.finish("vartrack", 0, 0, essay_filler(b, rng));
}

Example kv_uuid(Builder& b, Rng& rng) {
  const std::string key = uuid(rng), value = uuid(rng);
  b.header(b.encode({"Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n{"}));
  auto pair = [&b](const std::string& k, const std::string& v) {
    return b.encode({" \"", k, "\": \"", v, "\","});
  };
  b.needle(pair(key, value), rng.uniform());
  b.question(b.encode({"}\nKey: \"", key, "\"\nThe value associated with the specified key is: \""}));
  b.answer(b.encode({value}), value);
  return b.finish("kv-uuid", 0, 0, [pair, &rng]() { return pair(uuid(rng), uuid(rng)); });
}

Example common_words(Builder& b, Rng& rng) {
  // Words that are one token each, so that shares of the list are shares of tokens.
  std::vector<std::string> pool;
  for (const std::string& w : words("common")) {
    if (b.encode({" " + w}).size() == 1) pool.push_back(w);
  }
  KASCADE_CHECK(pool.size() >= 10, "task 'common-words': the tokenizer has only " << pool.size()
                                                                                 << " of the word list as single tokens");
  for (size_t i = pool.size(); i > 1; --i) std::swap(pool[i - 1], pool[rng.below(i)]);
  const std::vector<std::string> top = {pool[0], pool[1], pool[2]};
  // Shares of the three frequent words; every other word of the pool shares the rest evenly
  // (about 1% each), so the top three stand out clearly and in a fixed order.
  const double shares[3] = {0.10, 0.07, 0.05};
  b.header(b.encode({"Below is a list of words. Some of them appear more often than others. Memorize the ones that "
                     "appear most often.\n"}));
  b.question(b.encode({"\nQuestion: What are the three most common words in the list? Answer: The three most common "
                       "words are:"}));
  b.answer(b.encode({" " + top[0], " " + top[1], " " + top[2]}), top[0] + " " + top[1] + " " + top[2]);
  return b.finish("common-words", 0, 0, [&b, &rng, pool, top, shares]() {
    const double u = rng.uniform();
    if (u < shares[0]) return b.encode({" " + top[0]});
    if (u < shares[0] + shares[1]) return b.encode({" " + top[1]});
    if (u < shares[0] + shares[1] + shares[2]) return b.encode({" " + top[2]});
    return b.encode({" " + pool[3 + rng.below(pool.size() - 3)]});
  });
}

// The cleaned paragraphs of every corpus source's split, in source order, read once per process
// (per split and corpus root).
const std::vector<std::string>& corpus_paragraphs(Split split) {
  static std::mutex mutex;
  static std::map<std::pair<Split, std::string>, std::vector<std::string>> cache;
  const char* root = std::getenv("KASCADE_CORPUS_ROOT");
  const std::pair<Split, std::string> key{split, root ? root : ""};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  std::vector<std::string> all;
  for (const CorpusSource& source : natural_text_sources()) {
    std::vector<std::string> paragraphs = natural_text_paragraphs(source, split);
    all.insert(all.end(), std::make_move_iterator(paragraphs.begin()), std::make_move_iterator(paragraphs.end()));
  }
  return cache.emplace(key, std::move(all)).first->second;
}

// The passage: the first kCopyQueryTokens + kCopyAnswerTokens tokens of the first paragraph
// long enough, searching from a random one. The haystack is the text that follows that
// paragraph in the corpus (paragraph by paragraph, wrapping), so the passage's own paragraph
// is never part of it; it is inserted at a depth in [0, kCopyMaxDepth), and the context ends
// with the passage's start again.
Example copy_task(Builder& b, Rng& rng, Split split, const TaskTokenizer& tok) {
  const std::vector<std::string>& paragraphs = corpus_paragraphs(split);
  const size_t count = paragraphs.size();
  KASCADE_CHECK(count >= 2, "task 'copy': the " << to_string(split) << " corpus split has " << count << " paragraphs");
  const size_t passage_tokens = static_cast<size_t>(kCopyQueryTokens + kCopyAnswerTokens);
  size_t at = rng.below(count);
  Tokens passage;
  for (size_t tried = 0;; ++tried) {
    KASCADE_CHECK(tried < count, "task 'copy': no paragraph of the " << to_string(split) << " corpus split has "
                                                                     << passage_tokens << " tokens");
    passage = b.encode({paragraphs[at]});
    if (passage.size() >= passage_tokens) break;
    at = (at + 1) % count;
  }
  passage.resize(passage_tokens);
  const Tokens paragraph_break = b.encode({"\n\n"});
  auto with_break = [&paragraph_break](const Tokens& t) {
    Tokens out = paragraph_break;
    out.insert(out.end(), t.begin(), t.end());
    return out;
  };
  b.needle(with_break(passage), rng.uniform() * kCopyMaxDepth);
  b.question(with_break(Tokens(passage.begin(), passage.begin() + kCopyQueryTokens)));
  const Tokens answer(passage.begin() + kCopyQueryTokens, passage.end());
  b.answer(answer, tok.decode ? tok.decode(answer) : "");
  // Every paragraph starts with its break, as the passage and its repeat do.
  size_t next = at;
  return b.finish("copy", 0, 0, [&]() {
    next = (next + 1) % count;
    KASCADE_CHECK(next != at, "task 'copy': the " << to_string(split) << " corpus split is too short for length "
                                                  << b.length());
    return b.encode({"\n\n", paragraphs[next]});
  });
}

uint64_t mix(uint64_t h, uint64_t v) {
  Rng r(h ^ (v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2)));
  return r.next();
}

}  // namespace

const std::vector<std::string>& task_names() {
  static const std::vector<std::string> names = {"passkey", "niah-single", "niah-multikey", "vartrack",
                                                 "kv-uuid", "common-words", "copy"};
  return names;
}

Example make_example(const std::string& task, int length, int index, uint64_t seed, const TaskTokenizer& tok,
                     Split split) {
  KASCADE_CHECK(tok.encode != nullptr, "make_example: no tokenizer");
  KASCADE_CHECK(length >= 1, "task '" << task << "': length must be positive, got " << length);
  KASCADE_CHECK(index >= 0, "task '" << task << "': example index must be >= 0, got " << index);
  const auto known = std::find(task_names().begin(), task_names().end(), task);
  if (known == task_names().end()) {
    std::string list;
    for (const std::string& n : task_names()) list += (list.empty() ? "" : ", ") + n;
    KASCADE_FAIL("unknown task '" << task << "' (known: " << list << ")");
  }
  // One stream per (task, length, index, seed): examples do not shift when others are added.
  uint64_t h = mix(seed, static_cast<uint64_t>(known - task_names().begin()));
  h = mix(h, static_cast<uint64_t>(length));
  h = mix(h, static_cast<uint64_t>(index));
  // The dev split draws from streams of its own; eval keeps the streams of the unsplit tasks.
  constexpr uint64_t kDevStream = 0x6b61736361646576ull;  // "kascadev"
  if (split == Split::Dev) h = mix(h, kDevStream);
  Rng rng(h);
  Builder b(tok, length);
  Example ex;
  if (task == "passkey") ex = passkey(b, rng);
  else if (task == "niah-single") ex = niah(b, rng, 1, "niah-single");
  else if (task == "niah-multikey") ex = niah(b, rng, 4, "niah-multikey");
  else if (task == "vartrack") ex = vartrack(b, rng);
  else if (task == "kv-uuid") ex = kv_uuid(b, rng);
  else if (task == "common-words") ex = common_words(b, rng);
  else ex = copy_task(b, rng, split, tok);
  ex.index = index;
  ex.seed = seed;
  ex.split = split;
  return ex;
}

}  // namespace kascade::eval
