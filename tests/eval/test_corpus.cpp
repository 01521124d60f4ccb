// The natural-text corpus: both splits are non-empty, hold several long documents of every
// source, share no paragraph, come out the same on every call, and a missing package is one
// error line naming it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <set>
#include <string>

#include "kascade/engine/gguf.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"
#include "kascade/eval/corpus.h"
#include "../temp_dir.h"

namespace kascade::eval {
namespace {

TEST(Corpus, SplitsAreNonEmptyWithSeveralLongDocumentsPerSource) {
  for (Split split : {Split::Dev, Split::Eval}) {
    const std::vector<Document> docs = natural_text(split);
    std::map<std::string, int> long_docs;
    std::set<std::string> ids;
    for (const Document& d : docs) {
      EXPECT_EQ(d.split, split);
      EXPECT_TRUE(ids.insert(d.id).second) << "duplicate id " << d.id;
      EXPECT_GE(d.text.size(), kDocumentChars) << d.id;
      EXPECT_EQ(d.id.find(d.source + "/" + to_string(split) + "/"), 0u) << d.id;
      ++long_docs[d.source];
    }
    for (const CorpusSource& s : natural_text_sources())
      EXPECT_GE(long_docs[s.name], 5) << s.name << " " << to_string(split);
  }
}

TEST(Corpus, SourcesAreInterleaved) {
  const std::vector<Document> docs = natural_text(Split::Eval);
  const std::vector<CorpusSource>& sources = natural_text_sources();
  ASSERT_GE(docs.size(), 2 * sources.size());
  for (size_t i = 0; i < 2 * sources.size(); ++i) {
    EXPECT_EQ(docs[i].source, sources[i % sources.size()].name) << i;
    EXPECT_EQ(docs[i].id, sources[i % sources.size()].name + "/eval/" + std::to_string(i / sources.size()));
  }
  // The bible's verses are read in order: Genesis opens the dev split (after the preface).
  EXPECT_NE(natural_text_paragraphs(sources[2], Split::Dev)[0].find("World English Bible"), std::string::npos);
  bool genesis = false;
  for (const std::string& p : natural_text_paragraphs(sources[2], Split::Dev))
    genesis = genesis || p.rfind("In the beginning, God created the heavens and the earth.", 0) == 0;
  EXPECT_TRUE(genesis);
}

TEST(Corpus, SplitsShareNoParagraph) {
  for (const CorpusSource& source : natural_text_sources()) {
    const std::vector<std::string> dev = natural_text_paragraphs(source, Split::Dev);
    const std::vector<std::string> eval = natural_text_paragraphs(source, Split::Eval);
    ASSERT_FALSE(dev.empty());
    ASSERT_FALSE(eval.empty());
    const std::set<std::string> in_dev(dev.begin(), dev.end());
    for (const std::string& p : eval) EXPECT_EQ(in_dev.count(p), 0u) << source.name << ": " << p.substr(0, 80);
  }
  // And at the level of documents: no paragraph of an eval document is in a dev document.
  std::set<std::string> dev_paragraphs;
  for (const Document& d : natural_text(Split::Dev)) {
    size_t pos = 0;
    while (pos <= d.text.size()) {
      size_t end = d.text.find("\n\n", pos);
      if (end == std::string::npos) end = d.text.size();
      dev_paragraphs.insert(d.text.substr(pos, end - pos));
      pos = end + 2;
    }
  }
  for (const Document& d : natural_text(Split::Eval)) {
    size_t pos = 0;
    while (pos <= d.text.size()) {
      size_t end = d.text.find("\n\n", pos);
      if (end == std::string::npos) end = d.text.size();
      EXPECT_EQ(dev_paragraphs.count(d.text.substr(pos, end - pos)), 0u) << d.id;
      pos = end + 2;
    }
  }
}

TEST(Corpus, IsDeterministic) {
  const std::vector<Document> a = natural_text(Split::Eval), b = natural_text(Split::Eval);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].id, b[i].id);
    EXPECT_EQ(a[i].text, b[i].text);
  }
}

TEST(Corpus, TextIsCleanedProse) {
  for (const Document& d : natural_text(Split::Dev)) {
    // No table rows or box-drawing characters survive, and lines are joined.
    EXPECT_EQ(d.text.find("\xE2\x94"), std::string::npos) << d.id;
    EXPECT_EQ(d.text.find("+----"), std::string::npos) << d.id;
    EXPECT_EQ(d.text.find("\n\n\n"), std::string::npos) << d.id;
    EXPECT_EQ(d.text.find("  "), std::string::npos) << d.id;
    EXPECT_EQ(d.text.find("\xC2\xA0"), std::string::npos) << d.id;  // no-break spaces are spaces
    EXPECT_EQ(d.text.find("\n "), std::string::npos) << d.id;
    // No OSIS markup or footnote text survives in the SWORD module's text.
    if (d.source == "bible-web") {
      EXPECT_EQ(d.text.find('<'), std::string::npos) << d.id;
      EXPECT_EQ(d.text.find("strong:"), std::string::npos) << d.id;
    }
  }
}

TEST(Corpus, DocumentTokensReachTheLengthWithinTheSourceAndSplit) {
  const engine::GgufFile gguf = engine::GgufFile::open(std::string(KASCADE_TEST_DATA) + "/engine/tokenizer_gpt-2.gguf");
  const engine::Tokenizer tok = engine::Tokenizer::from_gguf(gguf);
  const std::vector<Document> docs = natural_text(Split::Eval);
  // One document alone is about 8k tokens; 20000 needs the next ones of the same source.
  const std::vector<int32_t> one = document_tokens(docs, 0, 1000, tok);
  EXPECT_EQ(one, tok.encode(docs[0].text, false));
  const std::vector<int32_t> more = document_tokens(docs, 0, 20000, tok);
  EXPECT_GE(more.size(), 20000u);
  EXPECT_EQ(tok.decode(more).substr(0, docs[0].text.size()), docs[0].text);
  // The continuation is the next document of the same source (the sources are interleaved).
  size_t next = 1;
  while (docs[next].source != docs[0].source) ++next;
  EXPECT_NE(tok.decode(more).find(docs[next].text.substr(0, 200)), std::string::npos);
  EXPECT_EQ(tok.decode(more).find(docs[1].text.substr(0, 200)), std::string::npos);
  // The last document wraps to the first of its own source, never to another source.
  size_t last_jargon = 0;
  for (size_t i = 0; i < docs.size(); ++i)
    if (docs[i].source == docs[0].source) last_jargon = i;
  const size_t last_alone = document_tokens(docs, last_jargon, 1, tok).size();
  const std::string wrapped = tok.decode(document_tokens(docs, last_jargon, last_alone + 1, tok));
  EXPECT_NE(wrapped.find(docs[0].text.substr(0, 200)), std::string::npos);
  EXPECT_THROW(document_tokens(docs, 0, 100000000, tok), Error);
  EXPECT_THROW(document_tokens(docs, docs.size(), 10, tok), Error);
}

TEST(Corpus, MissingPackageIsOneLineNamingIt) {
  const kascade::testing::TempDir empty("corpus");
  try {
    natural_text(Split::Dev, empty.path().string());
    FAIL() << "no error for an empty corpus root";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(natural_text_sources()[0].package), std::string::npos) << what;
    EXPECT_NE(what.find("install"), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  }
  // The same through the environment (what a tool run sees).
  ::setenv("KASCADE_CORPUS_ROOT", empty.path().string().c_str(), 1);
  EXPECT_THROW(natural_text(Split::Eval), Error);
  ::unsetenv("KASCADE_CORPUS_ROOT");
  EXPECT_FALSE(natural_text(Split::Eval).empty());
  EXPECT_THROW(parse_split("test"), Error);
  EXPECT_EQ(parse_split("eval"), Split::Eval);
}

}  // namespace
}  // namespace kascade::eval
