// src/engine/batch_schedule.h — how a batch forward() is cut into steps, shared by the CPU and
// CUDA batch backends: each step takes the next chunk (at most `chunk` tokens) of every sequence
// that still has tokens, so prompts of different lengths advance together and a sequence's
// logits are those of its last token. Internal to the engine.
//
//   return run_batch_in_chunks<Segment>(tokens, core.chunk(), vocab,
//       [&](size_t b, const int32_t* first, int count, float* logits) { return Segment{...}; },
//       [&](std::vector<Segment>& step) { core.step(step); });
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace kascade::engine {

// make_segment(b, first token, count, logits-or-null) builds one sequence's part of a step; the
// logits pointer is non-null on the sequence's last chunk only. Returns, per sequence, the logits
// of its last token ([vocab]), or an empty vector for a sequence given no tokens.
template <typename Segment, typename MakeSegment, typename Step>
std::vector<std::vector<float>> run_batch_in_chunks(const std::vector<std::vector<int32_t>>& tokens, int chunk,
                                                    size_t vocab, MakeSegment make_segment, Step step) {
  std::vector<std::vector<float>> logits(tokens.size());
  std::vector<size_t> done(tokens.size(), 0);
  for (size_t b = 0; b < tokens.size(); ++b) {
    if (!tokens[b].empty()) logits[b].resize(vocab);
  }
  for (;;) {
    std::vector<Segment> segments;
    for (size_t b = 0; b < tokens.size(); ++b) {
      const size_t left = tokens[b].size() - done[b];
      if (left == 0) continue;
      const int count = static_cast<int>(std::min<size_t>(static_cast<size_t>(chunk), left));
      const bool last = done[b] + static_cast<size_t>(count) == tokens[b].size();
      segments.push_back(make_segment(b, tokens[b].data() + done[b], count, last ? logits[b].data() : nullptr));
      done[b] += static_cast<size_t>(count);
    }
    if (segments.empty()) break;
    step(segments);
  }
  return logits;
}

}  // namespace kascade::engine
