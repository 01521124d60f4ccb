// Natural long text from Debian packages, cleaned and split into dev / eval documents
// (kascade/eval/corpus.h says how).
#include "kascade/eval/corpus.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/stat.h>
#include <unordered_set>
#include <vector>

#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"

namespace kascade::eval {

const char* to_string(Split split) { return split == Split::Dev ? "dev" : "eval"; }

Split parse_split(const std::string& name) {
  if (name == "dev") return Split::Dev;
  if (name == "eval") return Split::Eval;
  KASCADE_FAIL("unknown corpus split '" << name << "' (expected dev or eval)");
}

const std::vector<CorpusSource>& natural_text_sources() {
  static const std::vector<CorpusSource> sources = {
      {"jargon", "jargon-text", "/usr/share/doc/jargon-text/jargon.txt.gz"},
      {"debian-reference", "debian-reference-en", "/usr/share/debian-reference/debian-reference.en.txt.gz"},
      {"bible-web", "sword-text-web", "/usr/share/sword/modules/texts/ztext/engWEB2015eb", CorpusFormat::SwordZText},
  };
  return sources;
}

namespace {

std::string corpus_root(const std::string& root) {
  if (!root.empty()) return root;
  const char* env = std::getenv("KASCADE_CORPUS_ROOT");
  return env ? std::string(env) : std::string();
}

// Throws the one-line "install the package" error unless `path` is a regular file.
void require_file(const CorpusSource& source, const std::string& path) {
  struct stat st {};
  KASCADE_CHECK(::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode),
                "natural text corpus: " << path << " is missing: install the Debian package " << source.package
                                        << " (apt-get install " << source.package
                                        << "; scripts/apt-packages.txt lists it)");
}

// The whole decompressed file (gzip; zlib also reads an uncompressed file as it is).
std::string read_gzip(const CorpusSource& source, const std::string& root) {
  const std::string path = corpus_root(root) + source.path;
  require_file(source, path);
  gzFile file = gzopen(path.c_str(), "rb");
  KASCADE_CHECK(file != nullptr, "natural text corpus: cannot open " << path << " (package " << source.package << ")");
  std::string text;
  char buffer[1 << 16];
  for (;;) {
    const int n = gzread(file, buffer, sizeof(buffer));
    if (n < 0) {
      int code = 0;
      const std::string message = gzerror(file, &code);
      gzclose(file);
      KASCADE_FAIL("natural text corpus: " << path << " is not readable gzip (" << message << "); reinstall the package "
                                           << source.package);
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  gzclose(file);
  return text;
}

std::string read_binary(const CorpusSource& source, const std::string& path) {
  require_file(source, path);
  std::FILE* f = std::fopen(path.c_str(), "rb");
  KASCADE_CHECK(f != nullptr, "natural text corpus: cannot open " << path << " (package " << source.package << ")");
  std::string bytes;
  char buffer[1 << 16];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) bytes.append(buffer, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  KASCADE_CHECK(!failed, "natural text corpus: error reading " << path << " (package " << source.package << ")");
  return bytes;
}

uint32_t read_u32(const std::string& bytes, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes[at + static_cast<size_t>(i)]);
  return v;
}

// A decompressed block larger than this is a corrupt index (the largest book is about 3 MB).
constexpr uint32_t kMaxSwordBlockBytes = 64u << 20;

// Every verse of a SWORD zText module (the Old then the New Testament) in order, as OSIS XML:
// .bzs holds 12-byte block entries (offset, size, uncompressed size in .bzz), .bzv 10-byte verse
// entries (block, offset, size: u32, u32, u16), all little-endian; blocks are zlib streams.
std::vector<std::string> read_sword_verses(const CorpusSource& source, const std::string& root) {
  std::vector<std::string> verses;
  for (const char* testament : {"ot", "nt"}) {
    const std::string base = corpus_root(root) + source.path + "/" + testament;
    const std::string bzs = read_binary(source, base + ".bzs");
    const std::string bzv = read_binary(source, base + ".bzv");
    const std::string bzz = read_binary(source, base + ".bzz");
    auto corrupt = [&](const std::string& what) {
      KASCADE_FAIL("natural text corpus: " << base << ".* is damaged (" << what << "); reinstall the package "
                                           << source.package);
    };
    if (bzs.size() % 12 != 0) corrupt(".bzs is not a list of 12-byte entries");
    if (bzv.size() % 10 != 0) corrupt(".bzv is not a list of 10-byte entries");
    std::vector<std::string> blocks(bzs.size() / 12);
    std::vector<bool> inflated(blocks.size(), false);
    for (size_t e = 0; e < bzv.size(); e += 10) {
      const uint32_t block = read_u32(bzv, e), offset = read_u32(bzv, e + 4);
      const uint32_t size = static_cast<unsigned char>(bzv[e + 8]) | (static_cast<unsigned char>(bzv[e + 9]) << 8);
      if (size == 0) continue;
      if (block >= blocks.size()) corrupt("a verse names block " + std::to_string(block));
      if (!inflated[block]) {
        const uint32_t at = read_u32(bzs, 12 * block), packed = read_u32(bzs, 12 * block + 4);
        const uint32_t unpacked = read_u32(bzs, 12 * block + 8);
        if (static_cast<uint64_t>(at) + packed > bzz.size() || unpacked > kMaxSwordBlockBytes)
          corrupt("block " + std::to_string(block) + " is out of range");
        std::string& out = blocks[block];
        out.resize(unpacked);
        uLongf out_size = unpacked;
        if (uncompress(reinterpret_cast<Bytef*>(&out[0]), &out_size,
                       reinterpret_cast<const Bytef*>(bzz.data() + at), packed) != Z_OK ||
            out_size != unpacked)
          corrupt("block " + std::to_string(block) + " does not inflate");
        inflated[block] = true;
      }
      const std::string& text = blocks[block];
      if (static_cast<uint64_t>(offset) + size > text.size()) corrupt("a verse is out of its block");
      verses.push_back(text.substr(offset, size));
    }
  }
  return verses;
}

// The paragraphs of OSIS verses: footnotes (<note>) dropped with their text; paragraph marks
// (<div>, <chapter>, <lg>, <title>, <list>, <item>) break paragraphs; other tags are removed and
// their text kept; the five XML entities decoded; blanks collapsed. Verses are joined by a space.
std::vector<std::string> osis_paragraphs(const std::vector<std::string>& verses) {
  std::vector<std::string> paragraphs;
  std::string current;
  auto blank = [&]() {
    if (!current.empty() && current.back() != ' ') current += ' ';
  };
  auto flush = [&]() {
    while (!current.empty() && current.back() == ' ') current.pop_back();
    if (!current.empty()) paragraphs.push_back(current);
    current.clear();
  };
  // A dropped footnote stood between two words ("God<note>..</note>created"): a blank, unless
  // closing punctuation follows.
  bool after_note = false;
  auto text = [&](const std::string& s, size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      const char c = s[i];
      if (after_note) {
        after_note = false;
        const bool closing = std::string(".,;:!?)").find(c) != std::string::npos ||
                             s.compare(i, 3, "\xE2\x80\x9D") == 0 || s.compare(i, 3, "\xE2\x80\x99") == 0;
        if (!closing) blank();
      }
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        if (!current.empty()) blank();
        continue;
      }
      if (c == '&') {
        static const std::pair<const char*, char> entities[] = {
            {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
        bool decoded = false;
        for (const auto& [name, ch] : entities) {
          const size_t len = std::char_traits<char>::length(name);
          if (s.compare(i, len, name) == 0) {
            current += ch;
            i += len - 1;
            decoded = true;
            break;
          }
        }
        if (decoded) continue;
      }
      current += c;
    }
  };
  for (const std::string& verse : verses) {
    size_t i = 0;
    while (i < verse.size()) {
      if (verse[i] != '<') {
        const size_t next = std::min(verse.find('<', i), verse.size());
        text(verse, i, next);
        i = next;
        continue;
      }
      const size_t close = verse.find('>', i);
      if (close == std::string::npos) break;  // a cut tag at the end of a verse: nothing to keep
      const bool closing = verse[i + 1] == '/';
      const bool self_closing = verse[close - 1] == '/';
      size_t name_end = i + (closing ? 2 : 1);
      while (name_end < close && std::isalpha(static_cast<unsigned char>(verse[name_end]))) ++name_end;
      const std::string name = verse.substr(i + (closing ? 2 : 1), name_end - i - (closing ? 2 : 1));
      i = close + 1;
      if (name == "note" && !closing && !self_closing) {
        const size_t end = verse.find("</note>", i);
        i = end == std::string::npos ? verse.size() : end + 7;
        after_note = true;
        continue;
      }
      if (name == "div" || name == "chapter" || name == "lg" || name == "title" || name == "list" || name == "item") {
        flush();
        after_note = false;
      } else if (name == "l" || name == "lb") {
        blank();  // a line of verse
      }
    }
    blank();
  }
  flush();
  return paragraphs;
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r')) --e;
  return s.substr(b, e - b);
}

// A line this long (visible characters) that is mostly punctuation is ASCII art.
constexpr size_t kArtMinChars = 8;

// A row of a table or a rule, not prose: box-drawing characters (U+2500..U+257F, UTF-8
// E2 94 xx / E2 95 xx), an ASCII table row ("|a |b |", "+----+"), a line of rule characters
// or ASCII art.
bool is_table_line(const std::string& line) {
  if (line.find("\xE2\x94") != std::string::npos || line.find("\xE2\x95") != std::string::npos) return true;
  if (line[0] == '|' || (line[0] == '+' && line.size() > 1 && line[1] == '-')) return true;
  if (line.size() >= 3 && line.find_first_not_of("-=_*+~ ") == std::string::npos) return true;
  // ASCII art (diagrams, banners): mostly punctuation. Bytes of UTF-8 characters count as letters.
  size_t visible = 0, letters = 0;
  for (char ch : line) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == ' ' || c == '\t') continue;
    ++visible;
    if (c >= 0x80 || std::isalnum(c)) ++letters;
  }
  return visible >= kArtMinChars && 2 * letters < visible;
}

// Whether `s` is well-formed UTF-8 (the tokenizer refuses anything else).
bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t extra = 0;
    if (c >= 0x80) {
      if ((c >> 5) == 0x6) {
        extra = 1;
      } else if ((c >> 4) == 0xE) {
        extra = 2;
      } else if ((c >> 3) == 0x1E) {
        extra = 3;
      } else {
        return false;
      }
    }
    if (i + extra >= s.size() && extra > 0) return false;
    for (size_t j = 1; j <= extra; ++j)
      if ((static_cast<unsigned char>(s[i + j]) >> 6) != 0x2) return false;
    i += extra + 1;
  }
  return true;
}

// The cleaned paragraphs of a source's whole text, in order.
std::vector<std::string> clean_paragraphs(const std::string& text) {
  // The body starts at the first chapter (both sources have a table of contents before it).
  size_t start = 0;
  const std::string body_marker = "\nChapter 1. ";
  const size_t found = text.find(body_marker);
  if (found != std::string::npos) start = found + 1;

  std::vector<std::string> paragraphs;
  std::string paragraph;
  bool table = false;
  auto flush = [&]() {
    if (!paragraph.empty() && paragraph.back() == ' ') paragraph.pop_back();
    if (!paragraph.empty() && !table && valid_utf8(paragraph)) paragraphs.push_back(paragraph);
    paragraph.clear();
    table = false;
  };
  size_t pos = start;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string raw = text.substr(pos, end - pos);
    // No-break spaces (U+00A0) indent the Debian Reference's text: plain spaces here.
    for (size_t nbsp = raw.find("\xC2\xA0"); nbsp != std::string::npos; nbsp = raw.find("\xC2\xA0", nbsp))
      raw.replace(nbsp, 2, " ");
    const std::string line = trim(raw);
    pos = end + 1;
    if (line.empty()) {
      flush();
      continue;
    }
    if (is_table_line(line)) table = true;
    // Runs of blanks (alignment, double spaces after a full stop) become one space.
    for (char c : line) {
      const bool blank = c == ' ' || c == '\t';
      if (blank && (paragraph.empty() || paragraph.back() == ' ')) continue;
      paragraph += blank ? ' ' : c;
    }
    paragraph += ' ';
  }
  flush();
  return paragraphs;
}

// Index of the first paragraph of the second half: where the running character count first
// reaches half of the total.
size_t half_point(const std::vector<std::string>& paragraphs) {
  size_t total = 0;
  for (const std::string& p : paragraphs) total += p.size();
  size_t running = 0;
  for (size_t i = 0; i < paragraphs.size(); ++i) {
    running += paragraphs[i].size();
    if (2 * running >= total) return i + 1;
  }
  return paragraphs.size();
}

}  // namespace

std::vector<std::string> natural_text_paragraphs(const CorpusSource& source, Split split, const std::string& root) {
  const std::vector<std::string> all = source.format == CorpusFormat::SwordZText
                                           ? osis_paragraphs(read_sword_verses(source, root))
                                           : clean_paragraphs(read_gzip(source, root));
  KASCADE_CHECK(all.size() >= 2, "natural text corpus: " << source.path << " (package " << source.package
                                                          << ") holds no usable text");
  const size_t half = half_point(all);
  const std::vector<std::string> dev(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(half));
  if (split == Split::Dev) return dev;
  const std::unordered_set<std::string> in_dev(dev.begin(), dev.end());
  std::vector<std::string> eval;
  for (size_t i = half; i < all.size(); ++i)
    if (in_dev.count(all[i]) == 0) eval.push_back(all[i]);
  return eval;
}

std::vector<Document> natural_text(Split split, const std::string& root) {
  std::vector<std::vector<Document>> by_source;
  for (const CorpusSource& source : natural_text_sources()) {
    std::vector<Document>& docs = by_source.emplace_back();
    const std::vector<std::string> paragraphs = natural_text_paragraphs(source, split, root);
    std::vector<std::string> texts;
    std::string current;
    for (const std::string& p : paragraphs) {
      if (!current.empty()) current += "\n\n";
      current += p;
      if (current.size() >= kDocumentChars) {
        texts.push_back(std::move(current));
        current.clear();
      }
    }
    // The remainder joins the last document (or is the only one when the split is short).
    if (!current.empty()) {
      if (texts.empty())
        texts.push_back(std::move(current));
      else
        texts.back() += "\n\n" + current;
    }
    for (size_t i = 0; i < texts.size(); ++i) {
      Document d;
      d.source = source.name;
      d.id = source.name + "/" + to_string(split) + "/" + std::to_string(i);
      d.split = split;
      d.text = std::move(texts[i]);
      docs.push_back(std::move(d));
    }
  }
  // Interleaved: document i of every source before document i + 1 of any.
  std::vector<Document> docs;
  for (size_t i = 0;; ++i) {
    bool any = false;
    for (std::vector<Document>& source_docs : by_source) {
      if (i >= source_docs.size()) continue;
      docs.push_back(std::move(source_docs[i]));
      any = true;
    }
    if (!any) break;
  }
  return docs;
}

std::vector<int32_t> document_tokens(const std::vector<Document>& docs, size_t index, size_t min_tokens,
                                     const engine::Tokenizer& tok) {
  KASCADE_CHECK(index < docs.size(), "document_tokens: document " << index << " of " << docs.size());
  const Document& first = docs[index];
  // The same source and split, in order, starting at `index` and wrapping.
  std::vector<size_t> order;
  for (size_t i = index; i < docs.size(); ++i)
    if (docs[i].source == first.source && docs[i].split == first.split) order.push_back(i);
  for (size_t i = 0; i < index; ++i)
    if (docs[i].source == first.source && docs[i].split == first.split) order.push_back(i);
  std::string text;
  std::vector<int32_t> ids;
  for (size_t i : order) {
    if (!text.empty()) text += "\n\n";
    text += docs[i].text;
    ids = tok.encode(text, /*parse_special=*/false);
    if (ids.size() >= min_tokens) return ids;
  }
  KASCADE_FAIL("natural text corpus: the " << to_string(first.split) << " split of " << first.source << " has "
                                           << ids.size() << " tokens in all, fewer than the " << min_tokens
                                           << " asked for");
}

}  // namespace kascade::eval
