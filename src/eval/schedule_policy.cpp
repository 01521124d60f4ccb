// A layer schedule executed on the host as a SelectionPolicy (kascade/eval/scoring.h): the
// meaning of every LayerRule in terms of the policies' selection functions (policy.h). The GPU
// backend executes the same schedules on its kernels; tests check that, for every policy,
// make_attention_schedule(spec) run here selects exactly what make_policy(spec) selects.
#include <map>
#include <mutex>
#include <utility>

#include "kascade/error.h"
#include "kascade/eval/scoring.h"

namespace kascade::eval {

namespace {

class SchedulePolicy final : public SelectionPolicy {
 public:
  explicit SchedulePolicy(engine::AttentionSchedule schedule) : s_(std::move(schedule)) {}
  const char* name() const override { return s_.name.c_str(); }
  void reset() override {
    std::lock_guard<std::mutex> lock(mutex_);
    store_.clear();
  }
  KeySet select(const LayerInputs& in) override {
    using engine::LayerRule;
    KASCADE_CHECK(in.layer >= 0 && in.layer < static_cast<int>(s_.layers.size()),
                  "schedule '" << s_.name << "': layer " << in.layer << " is outside its " << s_.layers.size()
                               << " layers");
    const engine::LayerSchedule& ls = s_.layers[static_cast<size_t>(in.layer)];
    if (ls.rule == LayerRule::Dense || (in.phase == Phase::Prefill && s_.prefill_dense)) return KeySet{};
    SparsityParams params = s_.sparsity;
    params.pooling = ls.pooling;
    switch (ls.rule) {
      case LayerRule::Dense: return KeySet{};
      case LayerRule::DenseSelect:
        put(ls.slot, in.n, pooled_top_k(in, params, ls.pooling));
        return KeySet{};
      case LayerRule::Select: {
        ref::Selection sel = pooled_top_k(in, params, ls.pooling);
        put(ls.slot, in.n, sel);
        return KeySet{false, std::move(sel)};
      }
      case LayerRule::Streaming: return KeySet{false, streaming_selection(in, params)};
      case LayerRule::Quest: return KeySet{false, quest_selection(in, params)};
      case LayerRule::Reuse: break;
    }
    const ref::Selection sel = get(ls.slot, in.n, in.layer);
    if (ls.pooling == Pooling::All || ls.head_map.empty()) return KeySet{false, sel};
    return KeySet{false, remap_sets(sel, ls.head_map)};
  }

 private:
  void put(int slot, int n, ref::Selection sel) {
    std::lock_guard<std::mutex> lock(mutex_);
    store_[{slot, n}] = std::move(sel);
  }
  ref::Selection get(int slot, int n, int layer) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = store_.find({slot, n});
    KASCADE_CHECK(it != store_.end(), "schedule '" << s_.name << "': layer " << layer << " reads slot " << slot
                                                   << " at context length " << n << ", which no earlier layer wrote");
    return it->second;
  }

  engine::AttentionSchedule s_;
  mutable std::mutex mutex_;
  std::map<std::pair<int, int>, ref::Selection> store_;  // (slot, n) -> selection
};

}  // namespace

std::unique_ptr<SelectionPolicy> make_schedule_policy(const engine::AttentionSchedule& schedule) {
  return std::make_unique<SchedulePolicy>(schedule);
}

}  // namespace kascade::eval
