// kascade/eval/corpus.h — natural long English text for the accuracy study (perplexity, the copy
// task, calibration), read from Debian packages that scripts/setup.sh installs, with a
// development split and an evaluation split that never meet.
//
// Sources (natural_text_sources()): the Jargon File (package jargon-text) and the Debian
// Reference (debian-reference-en) as the plain text the packages ship (gzip), and the World
// English Bible (sword-text-web) as the SWORD zText module it ships (zlib blocks of OSIS XML).
// Plain text: the front matter before "Chapter 1. " is dropped, the text is cut into paragraphs
// at blank lines, paragraphs that are tables (box-drawing or ASCII-art rows) are dropped, and
// each paragraph's lines are joined with single spaces. OSIS: verses are read in order through
// the module's verse index, footnotes are dropped, paragraphs break at the text's paragraph,
// chapter, title and line-group marks, and the remaining markup is removed.
//
// The split (deterministic, documented in docs/perplexity.md): each source's paragraphs are cut
// in two halves at the paragraph where the running character count passes half of the total.
// The first half is `dev`, the second `eval`; an eval paragraph whose text also occurs in dev
// is dropped, so that no passage is in both. Each half is then grouped, in order, into
// documents of at least kDocumentChars characters (about 8k tokens of English; paragraphs are
// never cut), the remainder joining the last one. Calibration reads only `dev`, reported
// evaluations only `eval`.
//
//   auto docs = kascade::eval::natural_text(kascade::eval::Split::Eval);
//   std::vector<int32_t> ids = kascade::eval::document_tokens(docs, 0, 4096, tok);  // >= 4096
//
// A missing package is one error line naming it (kascade::Error). `root` (or the environment
// variable KASCADE_CORPUS_ROOT when `root` is empty) is prepended to the packages' absolute
// paths: tests point it at an empty directory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kascade::engine {
class Tokenizer;
}

namespace kascade::eval {

enum class Split { Dev, Eval };
const char* to_string(Split split);         // "dev" | "eval"
Split parse_split(const std::string& name);  // throws kascade::Error for another name

// Documents are at least this many characters (paragraphs are never cut).
constexpr size_t kDocumentChars = 32768;

enum class CorpusFormat {
  GzipText,   // plain text, gzip-compressed (or not)
  SwordZText  // a SWORD zText module directory: ot/nt .bzs (blocks), .bzv (verses), .bzz (zlib)
};
struct CorpusSource {
  std::string name;     // "jargon", "debian-reference", "bible-web"
  std::string package;  // the Debian package that ships it
  std::string path;     // the file (GzipText) or the module directory (SwordZText), absolute
  CorpusFormat format = CorpusFormat::GzipText;
};
const std::vector<CorpusSource>& natural_text_sources();

struct Document {
  std::string source;  // CorpusSource::name
  std::string id;      // "<source>/<split>/<index>", stable across runs
  Split split = Split::Dev;
  std::string text;    // paragraphs separated by "\n\n"
};

// Every document of `split`, the sources interleaved (the first document of each source in
// natural_text_sources() order, then the second of each, ...; a source that has run out is
// passed over), in text order within a source, so that the first N documents sample every
// source. Throws kascade::Error naming the package when a source file is missing or
// unreadable.
std::vector<Document> natural_text(Split split, const std::string& root = "");

// The paragraphs of one source's split after cleaning (what the documents are made of).
std::vector<std::string> natural_text_paragraphs(const CorpusSource& source, Split split,
                                                 const std::string& root = "");

// Token ids (tok.encode(text, false): no BOS, special-token text not parsed) of docs[index],
// followed, while there are fewer than min_tokens, by the next documents of the same source and
// split in order (wrapping to that source's first), joined with "\n\n". May return more than
// min_tokens. Throws when all of that source's documents together are too short.
std::vector<int32_t> document_tokens(const std::vector<Document>& docs, size_t index, size_t min_tokens,
                                     const engine::Tokenizer& tok);

}  // namespace kascade::eval
