// src/engine/backend_front.h — the front ends that the CPU and CUDA backends share: the public
// Backend / BatchBackend calls (reset, position, stats, hooks, truncate, bounds checks) and how a
// forward() is cut into steps, over a Core that runs one step of any number of sequences.
// Internal to the engine.
//
// A Core provides: types Sequence (fields n, stats) and Segment; static Segment segment(Sequence*,
// const int32_t* tokens, int count, float* logits, bool all_logits); vocab(), chunk(), options(),
// check_tokens(tokens), reset(Sequence&), truncate(Sequence&, int), reserve(Sequence&, int
// positions) (called before a forward() that takes a sequence to `positions` tokens),
// step(std::vector<Segment>&);
// the single-sequence front also uses set_attention_hook / set_query_key_hook /
// set_attention_override.
//
//   class CpuBackend final : public SequenceFront<CpuCore> { ... name() ... };
//   class CpuBatchBackend final : public BatchFront<CpuCore> { ... };
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "kascade/engine/backend.h"
#include "kascade/error.h"

namespace kascade::engine {

// How a batch forward() is cut into steps: each step takes the next chunk (at most `chunk`
// tokens) of every sequence that still has tokens, so prompts of different lengths advance
// together. make_segment(b, first token, count, logits-or-null) builds one sequence's part of a
// step; the logits pointer is non-null on the sequence's last chunk only. Returns, per sequence,
// the logits of its last token ([vocab]), or an empty vector for a sequence given no tokens.
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

// One sequence: a long input runs in chunks of core.chunk() tokens, one step each.
template <typename Core>
class SequenceFront : public Backend {
 public:
  template <typename... CoreArgs>
  explicit SequenceFront(CoreArgs&&... core_args) : core_(std::forward<CoreArgs>(core_args)...) {
    core_.reset(seq_);
  }

  void reset() override { core_.reset(seq_); }
  int position() const override { return seq_.n; }
  AttentionStats stats() const override { return seq_.stats; }
  void set_attention_hook(AttentionHook hook) override { core_.set_attention_hook(std::move(hook)); }
  void set_query_key_hook(QueryKeyHook hook) override { core_.set_query_key_hook(std::move(hook)); }
  void set_attention_override(AttentionOverride attention) override {
    core_.set_attention_override(std::move(attention));
  }
  void truncate(int position) override { core_.truncate(seq_, position); }

  std::vector<float> forward(const std::vector<int32_t>& tokens, bool all_logits) override {
    KASCADE_CHECK(!tokens.empty(), "forward: no tokens");
    core_.check_tokens(tokens);
    const int total = static_cast<int>(tokens.size());
    const size_t vocab = static_cast<size_t>(core_.vocab());
    std::vector<float> logits((all_logits ? static_cast<size_t>(total) : 1) * vocab);
    core_.reserve(seq_, seq_.n + total);
    for (int done = 0; done < total;) {
      const int count = std::min(core_.chunk(), total - done);
      const bool last = done + count == total;
      float* out = all_logits ? logits.data() + static_cast<size_t>(done) * vocab : (last ? logits.data() : nullptr);
      std::vector<typename Core::Segment> segments{Core::segment(&seq_, tokens.data() + done, count, out, all_logits)};
      core_.step(segments);
      done += count;
      if (core_.options().on_prefill_progress && total > 1) core_.options().on_prefill_progress(done, total);
    }
    return logits;
  }

 protected:
  Core core_;
  typename Core::Sequence seq_;
};

// A batch of sequences behind `Interface` (BatchBackend or an extension of it).
template <typename Core, typename Interface = BatchBackend>
class BatchFront : public Interface {
 public:
  template <typename... CoreArgs>
  explicit BatchFront(int batch, CoreArgs&&... core_args) : core_(std::forward<CoreArgs>(core_args)...) {
    KASCADE_CHECK(batch >= 1, "batch backend: batch size must be at least 1, got " << batch);
    seqs_.resize(static_cast<size_t>(batch));
    for (typename Core::Sequence& s : seqs_) core_.reset(s);
  }

  int batch_size() const override { return static_cast<int>(seqs_.size()); }
  void reset() override {
    for (typename Core::Sequence& s : seqs_) core_.reset(s);
  }
  int position(int seq) const override { return at(seq).n; }
  AttentionStats stats(int seq) const override { return at(seq).stats; }

  std::vector<std::vector<float>> forward(const std::vector<std::vector<int32_t>>& tokens) override {
    KASCADE_CHECK(tokens.size() == seqs_.size(), "batch forward: " << tokens.size() << " token lists for a batch of "
                                                                    << seqs_.size());
    for (const std::vector<int32_t>& t : tokens) core_.check_tokens(t);
    for (size_t b = 0; b < tokens.size(); ++b) {
      core_.reserve(seqs_[b], seqs_[b].n + static_cast<int>(tokens[b].size()));
    }
    return run_batch_in_chunks<typename Core::Segment>(
        tokens, core_.chunk(), static_cast<size_t>(core_.vocab()),
        [&](size_t b, const int32_t* first, int count, float* logits) {
          return Core::segment(&seqs_[b], first, count, logits, false);
        },
        [&](std::vector<typename Core::Segment>& segments) { core_.step(segments); });
  }

 protected:
  const typename Core::Sequence& at(int seq) const {
    KASCADE_CHECK(seq >= 0 && seq < batch_size(),
                  "batch backend: sequence " << seq << " is outside [0, " << batch_size() << ")");
    return seqs_[static_cast<size_t>(seq)];
  }
  Core core_;
  std::vector<typename Core::Sequence> seqs_;
};

}  // namespace kascade::engine
