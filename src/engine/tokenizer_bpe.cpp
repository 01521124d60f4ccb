// BPE over one pre-tokenized word: its first symbols (bytes in GPT-2's alphabet, or SentencePiece
// characters with byte fallback) and the rank-ordered merges.
#include "tokenizer_internal.h"

#include <algorithm>
#include <queue>
#include <tuple>

namespace kascade::engine {

namespace tokenizer_detail {

// GPT-2's reversible map from bytes to printable code points: printable Latin-1 bytes map to
// themselves, the rest to 256, 257, ... in byte order.
std::vector<uint32_t> byte_to_codepoint() {
  std::vector<uint32_t> map(256, 0);
  std::vector<bool> direct(256, false);
  for (int b = '!'; b <= '~'; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) map[b] = direct[b] ? static_cast<uint32_t>(b) : next++;
  return map;
}

}  // namespace tokenizer_detail

using tokenizer_detail::append_utf8;
using tokenizer_detail::byte_to_codepoint;
using tokenizer_detail::utf8_sequence_length;

void Tokenizer::bpe_word(const std::string& word, std::vector<int32_t>& out) const {
  static const std::vector<uint32_t> b2c = byte_to_codepoint();
  if (ignore_merges_) {  // a word that is a token is that token, whatever the merges say
    std::string piece;
    if (sentencepiece_) {
      piece = word;
    } else {
      for (unsigned char c : word) append_utf8(piece, b2c[c]);
    }
    const int32_t id = find_token(piece);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  if (sentencepiece_) {
    // One symbol per character in the vocabulary; the bytes of any other character fall back to
    // their <0xNN> tokens.
    for (size_t i = 0; i < word.size();) {
      const size_t len = utf8_sequence_length(word, i);
      const int32_t id = find_token(word.substr(i, len));
      if (id >= 0 && !is_special(id)) {
        symbols.push_back(id);
      } else {
        for (size_t k = 0; k < len; ++k) symbols.push_back(byte_token_[static_cast<unsigned char>(word[i + k])]);
      }
      i += len;
    }
  } else {
    for (unsigned char c : word) {
      if (byte_token_[c] >= 0) symbols.push_back(byte_token_[c]);
    }
  }
  merge_symbols(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
}

void Tokenizer::merge_symbols(std::vector<int32_t>& symbols) const {
  // Repeatedly merge the adjacent pair of lowest rank, leftmost among equal ranks: a heap of
  // candidate pairs over a linked list of symbols, so that a long word costs n log n, not n^2.
  // A popped candidate whose symbols have changed since it was pushed is skipped.
  const int n = static_cast<int>(symbols.size());
  if (n < 2) return;
  std::vector<int> next(static_cast<size_t>(n)), prev(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    next[static_cast<size_t>(i)] = i + 1 < n ? i + 1 : -1;
    prev[static_cast<size_t>(i)] = i - 1;
  }
  using Candidate = std::tuple<int32_t, int, int32_t, int32_t>;  // rank, left position, left id, right id
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto consider = [&](int left) {
    if (left < 0) return;
    const int right = next[static_cast<size_t>(left)];
    if (right < 0) return;
    const int32_t a = symbols[static_cast<size_t>(left)], b = symbols[static_cast<size_t>(right)];
    auto it = merges_.find((static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b));
    if (it != merges_.end()) heap.emplace(it->second.rank, left, a, b);
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  constexpr int32_t kRemoved = -1;
  while (!heap.empty()) {
    const int left = std::get<1>(heap.top());
    const int32_t a = std::get<2>(heap.top()), b = std::get<3>(heap.top());
    heap.pop();
    const int right = next[static_cast<size_t>(left)];
    if (symbols[static_cast<size_t>(left)] != a || right < 0 || symbols[static_cast<size_t>(right)] != b) continue;
    const auto key = (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b);
    symbols[static_cast<size_t>(left)] = merges_.at(key).result;
    symbols[static_cast<size_t>(right)] = kRemoved;
    next[static_cast<size_t>(left)] = next[static_cast<size_t>(right)];
    if (next[static_cast<size_t>(right)] >= 0) prev[static_cast<size_t>(next[static_cast<size_t>(right)])] = left;
    consider(prev[static_cast<size_t>(left)]);
    consider(left);
  }
  symbols.erase(std::remove(symbols.begin(), symbols.end(), kRemoved), symbols.end());
}

}  // namespace kascade::engine
