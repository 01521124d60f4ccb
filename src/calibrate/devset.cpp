// The built-in development set (multi-hop QA over a synthetic world) and the JSONL reader.
// See include/kascade/devset.h for what the prompts look like and why.
#include "kascade/devset.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kascade/error.h"
#include "kascade/json.h"

namespace kascade {

namespace {

// Version of the generator: bump it whenever the text for a given seed changes, so that a plan's
// provenance names the prompts it was calibrated on.
constexpr int kBuiltinDevSetVersion = 1;

// SplitMix64: a tiny generator whose output is fixed by its definition on every platform
// (std::uniform_int_distribution is not).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) for n >= 1 (the modulo bias is below 2^-40 for the n used here).
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
  bool chance(int percent) { return below(100) < static_cast<size_t>(percent); }
  template <typename T>
  const T& pick(const std::vector<T>& items) { return items[below(items.size())]; }

 private:
  uint64_t state_;
};

const std::vector<std::string> kOnsets = {"b", "br", "d", "f", "g", "h", "k", "l", "m", "n", "p",
                                          "r", "s", "st", "t", "v", "w", "z", "th", "sh", "c", "j"};
const std::vector<std::string> kVowels = {"a", "e", "i", "o", "u", "ai", "ei", "ou", "ia"};
const std::vector<std::string> kCodas = {"", "", "", "n", "r", "l", "s", "m", "th", "nd", "rk", "x"};
const std::vector<std::string> kCompanySuffixes = {"Works", "Holdings", "Laboratories", "Foundry", "Textiles",
                                                   "Shipping", "Instruments", "Mills", "Press", "Engineering"};
const std::vector<std::string> kProfessions = {
    "carpenter", "botanist", "accountant", "pilot",    "cartographer", "nurse",     "architect", "chemist",
    "teacher",   "baker",    "surveyor",   "engineer", "librarian",    "geologist", "translator", "potter"};
const std::vector<std::string> kRivers = {"Oss", "Varn", "Tillow", "Mere", "Hask", "Ondel", "Brisk", "Lune"};
const std::vector<std::string> kProducts = {"glassworks", "orchards", "wool markets", "clock makers", "harbour",
                                            "stone bridges", "paper mills", "spring festival", "observatory"};

struct Person {
  std::string name;
  int birth_city = 0;
  int employer = 0;
  int mentor = -1;  // an earlier person, or none
  int age = 0;
  std::string profession;
};
struct Company {
  std::string name;
  int headquarters = 0;
};

struct Fact {
  std::string sentence;
  bool stated = false;
};

// A two-hop question: both facts must be stated before it is asked.
struct QuestionTemplate {
  std::string question;
  std::string answer;
  int first_fact = 0;
  int second_fact = 0;
  bool asked = false;
};

// Grows an imaginary world cluster by cluster and writes it out as prose with questions.
class WorldWriter {
 public:
  explicit WorldWriter(uint64_t seed) : rng_(seed) {}

  std::string preamble() const {
    return "The following notes describe the people, companies and cities of an imaginary country. "
           "Questions about the notes are answered along the way; every answer combines two facts "
           "stated earlier in the notes.\n\n";
  }

  // A paragraph of facts, then zero to two questions about facts already stated.
  std::string next_block(DevPrompt& prompt, size_t block_offset) {
    constexpr size_t kMinPendingFacts = 12;
    while (pending_.size() < kMinPendingFacts) add_cluster();
    std::string block;
    const size_t sentences = 5 + rng_.below(5);
    for (size_t s = 0; s < sentences; ++s) {
      const size_t slot = rng_.below(pending_.size());
      Fact& fact = facts_[static_cast<size_t>(pending_[slot])];
      pending_[slot] = pending_.back();
      pending_.pop_back();
      fact.stated = true;
      block += (s == 0 ? "" : " ") + fact.sentence;
      ++prompt.fact_sentences;
    }
    block += "\n\n";
    const size_t questions = rng_.below(3);
    for (size_t i = 0; i < questions; ++i) {
      QuestionTemplate* q = pick_answerable_question();
      if (!q) break;
      q->asked = true;
      DevQuestion out;
      out.question = "Question: " + q->question;
      out.answer = q->answer;
      out.first_fact = facts_[static_cast<size_t>(q->first_fact)].sentence;
      out.second_fact = facts_[static_cast<size_t>(q->second_fact)].sentence;
      out.question_offset = block_offset + block.size();
      block += out.question + "\nAnswer: " + q->answer + ".\n\n";
      prompt.questions.push_back(std::move(out));
    }
    return block;
  }

 private:
  std::string unique_name(int syllables) {
    for (;;) {
      std::string name;
      for (int s = 0; s < syllables; ++s) name += rng_.pick(kOnsets) + rng_.pick(kVowels);
      name += rng_.pick(kCodas);
      name[0] = static_cast<char>(name[0] - 'a' + 'A');
      if (used_names_.insert(name).second) return name;
    }
  }

  int add_fact(std::string sentence) {
    facts_.push_back({std::move(sentence), false});
    const int id = static_cast<int>(facts_.size()) - 1;
    pending_.push_back(id);
    return id;
  }

  // Two cities, two companies and six people; people may be mentored by anyone met before, so
  // questions link clusters that are far apart in the text.
  void add_cluster() {
    for (int i = 0; i < 2; ++i) {
      cities_.push_back(unique_name(2 + static_cast<int>(rng_.below(2))));
      const std::string& city = cities_.back();
      add_fact(rng_.chance(50) ? city + " lies on the river " + rng_.pick(kRivers) + " and is known for its " +
                                     rng_.pick(kProducts) + "."
                               : "Visitors to " + city + " usually come for its " + rng_.pick(kProducts) + ".");
    }
    for (int i = 0; i < 2; ++i) {
      Company c;
      c.name = unique_name(2) + " " + rng_.pick(kCompanySuffixes);
      c.headquarters = static_cast<int>(rng_.below(cities_.size()));
      const std::string& city = cities_[static_cast<size_t>(c.headquarters)];
      company_hq_fact_.push_back(add_fact(rng_.chance(50) ? c.name + " is headquartered in " + city + "."
                                                          : "The head office of " + c.name + " is in " + city + "."));
      companies_.push_back(std::move(c));
    }
    for (int i = 0; i < 6; ++i) {
      Person p;
      p.name = unique_name(2) + " " + unique_name(2 + static_cast<int>(rng_.below(2)));
      p.birth_city = static_cast<int>(rng_.below(cities_.size()));
      p.employer = static_cast<int>(rng_.below(companies_.size()));
      p.mentor = !people_.empty() && rng_.chance(80) ? static_cast<int>(rng_.below(people_.size())) : -1;
      p.age = 24 + static_cast<int>(rng_.below(48));
      p.profession = rng_.pick(kProfessions);
      add_person(std::move(p));
    }
  }

  void add_person(Person p) {
    const std::string& name = p.name;
    const std::string& city = cities_[static_cast<size_t>(p.birth_city)];
    const std::string& company = companies_[static_cast<size_t>(p.employer)].name;
    PersonFacts f;
    f.birth = add_fact(rng_.chance(50) ? name + " was born in " + city + "." : "The birthplace of " + name + " is " + city + ".");
    f.employer = add_fact(rng_.chance(50) ? name + " works for " + company + "."
                                          : name + " has been employed by " + company + " since " +
                                                std::to_string(1990 + rng_.below(30)) + ".");
    f.age = add_fact(name + " is " + std::to_string(p.age) + " years old.");
    f.profession = add_fact(name + " works as a " + p.profession + ".");
    const int hq_fact = company_hq_fact_[static_cast<size_t>(p.employer)];
    const std::string& hq_city = cities_[static_cast<size_t>(companies_[static_cast<size_t>(p.employer)].headquarters)];
    questions_.push_back({"In which city is the company that " + name + " works for headquartered?", hq_city, f.employer,
                          hq_fact});
    if (p.mentor >= 0) {
      const Person& m = people_[static_cast<size_t>(p.mentor)];
      const PersonFacts& mf = person_facts_[static_cast<size_t>(p.mentor)];
      f.mentor = add_fact(rng_.chance(50) ? m.name + " is the mentor of " + name + "."
                                          : name + " was trained by " + m.name + ", who remains a mentor.");
      questions_.push_back({"Where was the mentor of " + name + " born?", cities_[static_cast<size_t>(m.birth_city)],
                            f.mentor, mf.birth});
      questions_.push_back({"How old is the mentor of " + name + "?", std::to_string(m.age), f.mentor, mf.age});
      questions_.push_back({"What does the mentor of " + name + " do for a living?", "a " + m.profession, f.mentor,
                            mf.profession});
      questions_.push_back({"Which company employs the mentor of " + name + "?",
                            companies_[static_cast<size_t>(m.employer)].name, f.mentor, mf.employer});
    }
    people_.push_back(std::move(p));
    person_facts_.push_back(f);
  }

  QuestionTemplate* pick_answerable_question() {
    std::vector<QuestionTemplate*> ready;
    for (QuestionTemplate& q : questions_) {
      if (!q.asked && facts_[static_cast<size_t>(q.first_fact)].stated && facts_[static_cast<size_t>(q.second_fact)].stated) {
        ready.push_back(&q);
      }
    }
    return ready.empty() ? nullptr : ready[rng_.below(ready.size())];
  }

  struct PersonFacts {
    int birth = -1, employer = -1, age = -1, profession = -1, mentor = -1;
  };

  Rng rng_;
  std::set<std::string> used_names_;
  std::vector<std::string> cities_;
  std::vector<Company> companies_;
  std::vector<int> company_hq_fact_;
  std::vector<Person> people_;
  std::vector<PersonFacts> person_facts_;
  std::vector<Fact> facts_;
  std::vector<int> pending_;  // facts not yet written
  std::vector<QuestionTemplate> questions_;
};

// One generator stream per (seed, prompt): prompts are independent of how many came before.
uint64_t prompt_seed(uint64_t seed, int index) {
  Rng mix(seed ^ (0xd1b54a32d192ed03ull * (static_cast<uint64_t>(index) + 1)));
  return mix.next();
}

}  // namespace

DevPrompt make_dev_prompt(uint64_t seed, int index, int64_t min_tokens, const TokenCounter& count_tokens) {
  KASCADE_CHECK(index >= 0, "dev set: prompt index must be >= 0, got " << index);
  KASCADE_CHECK(min_tokens >= 1, "dev set: the prompt length must be at least 1 token, got " << min_tokens);
  KASCADE_CHECK(count_tokens, "dev set: no token counter given");
  WorldWriter writer(prompt_seed(seed, index));
  DevPrompt prompt;
  prompt.text = writer.preamble();
  // Blocks are counted one by one (cheap); the whole text is counted once the sum reaches the
  // target, because a tokenizer may merge across a block boundary.
  int64_t estimate = count_tokens(prompt.text);
  for (;;) {
    if (estimate >= min_tokens) {
      prompt.tokens = count_tokens(prompt.text);
      if (prompt.tokens >= min_tokens) break;
      estimate = prompt.tokens;
    }
    const std::string block = writer.next_block(prompt, prompt.text.size());
    prompt.text += block;
    estimate += count_tokens(block);
  }
  return prompt;
}

std::string builtin_dev_set_name(uint64_t seed) {
  std::ostringstream s;
  s << "builtin multi-hop QA v" << kBuiltinDevSetVersion << ", seed " << seed;
  return s.str();
}

std::vector<std::string> read_dev_set_jsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KASCADE_CHECK(in.good(), path << ": cannot open the development set");
  std::vector<std::string> texts;
  std::string line;
  int64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const nlohmann::json record = parse_json_strict(line, path + ":" + std::to_string(line_number));
    KASCADE_CHECK(record.is_object(), path << ":" << line_number << ": expected an object {\"text\": \"...\"}");
    for (const auto& item : record.items()) {
      KASCADE_CHECK(item.key() == "text", path << ":" << line_number << ": unknown key '" << item.key()
                                               << "' (each line is {\"text\": \"...\"})");
    }
    KASCADE_CHECK(record.contains("text"), path << ":" << line_number << ": missing \"text\"");
    KASCADE_CHECK(record["text"].is_string(), path << ":" << line_number << ": \"text\" must be a string");
    std::string text = record["text"].get<std::string>();
    KASCADE_CHECK(!text.empty(), path << ":" << line_number << ": \"text\" is empty");
    texts.push_back(std::move(text));
  }
  KASCADE_CHECK(!in.bad(), path << ": read error");
  KASCADE_CHECK(!texts.empty(), path << ": no prompts (expected one {\"text\": \"...\"} object per line)");
  return texts;
}

}  // namespace kascade
