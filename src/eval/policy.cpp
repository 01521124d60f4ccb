// The selection policies of the accuracy study (SPEC 8) and the one attention they share.
//
// Each policy is a selection rule (a pure function below) plus the bookkeeping of which layer
// selects and which layers read. Selections an anchor (or filter layer) makes are kept per
// (anchor, context length n) so that a chunk processed as a batch of decode rows, where every
// row has its own n, pairs each reuse row with its own anchor row. Rows of one layer may be
// selected concurrently (attend_rows_as_decode): the store is the only shared state, behind a mutex.
#include "kascade/eval/policy.h"

#include <algorithm>
#include <limits>
#include <map>
#include <mutex>
#include <numeric>
#include <utility>

#include "kascade/budget.h"
#include "kascade/error.h"

namespace kascade::eval {

namespace {

int selection_width(const ref::Call& call, int tiles, int n) {
  int width = 0;
  for (int tau = 0; tau < tiles; ++tau) width = std::max(width, ref::tile_budget(call, tau, n));
  return width;
}

void set_row(ref::Selection& sel, int set, int tau, const std::vector<int32_t>& keys) {
  KASCADE_CHECK(static_cast<int>(keys.size()) <= sel.k_max,
                "selection row of " << keys.size() << " keys exceeds its width " << sel.k_max);
  std::copy(keys.begin(), keys.end(), sel.row(set, tau));
  sel.count[static_cast<size_t>(set) * sel.num_tiles + tau] = static_cast<int32_t>(keys.size());
}

// The `k` keys of highest score among 0..b-1, ties toward the lower index, returned ascending.
std::vector<int32_t> top_k_keys(const double* score, int b, int k) {
  std::vector<int32_t> order(static_cast<size_t>(b));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [score](int32_t x, int32_t y) {
    return score[x] != score[y] ? score[x] > score[y] : x < y;
  });
  order.resize(static_cast<size_t>(k));
  std::sort(order.begin(), order.end());
  return order;
}

// ---- the policies ----------------------------------------------------------------------------

class DensePolicy final : public SelectionPolicy {
 public:
  const char* name() const override { return "dense"; }
  KeySet select(const LayerInputs&) override { return KeySet{}; }
};

class OraclePolicy final : public SelectionPolicy {
 public:
  explicit OraclePolicy(const PolicyContext& ctx) : params_(ctx.params) {}
  const char* name() const override { return "oracle"; }
  KeySet select(const LayerInputs& in) override {
    if (in.layer == 0) return KeySet{};
    return KeySet{false, pooled_top_k(in, params_, Pooling::Group)};
  }

 private:
  SparsityParams params_;
};

// Selections made by selecting layers, read by the layers after them, per context length n.
// Entries are written once per (slot, n) and never moved (std::map nodes are stable), so a
// reference from get() stays valid while other rows insert theirs.
class SelectionStore {
 public:
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    by_slot_n_.clear();
  }
  void put(int slot, int n, ref::Selection sel) {
    std::lock_guard<std::mutex> lock(mutex_);
    by_slot_n_[{slot, n}] = std::move(sel);
  }
  const ref::Selection& get(int slot, int n, int layer) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = by_slot_n_.find({slot, n});
    KASCADE_CHECK(it != by_slot_n_.end(), "layer " << layer << " reads the selection of slot " << slot
                                                   << " at context length " << n
                                                   << ", which no earlier layer made (layers out of order?)");
    return it->second;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<int, int>, ref::Selection> by_slot_n_;
};

class KascadePolicy final : public SelectionPolicy {
 public:
  KascadePolicy(const PolicyContext& ctx, Pooling pooling, const char* name)
      : params_(ctx.params), plan_(*ctx.plan), pooling_(pooling), name_(name) {
    KASCADE_CHECK(plan_.layers == ctx.layers,
                  "plan has " << plan_.layers << " layers but the model has " << ctx.layers);
  }
  const char* name() const override { return name_; }
  void reset() override { store_.clear(); }
  KeySet select(const LayerInputs& in) override {
    const int slot = plan_.anchor_slot(in.layer);
    switch (plan_.role_of(in.layer)) {
      case Role::Dense:  // a plan's layers select (layer 0) or read a selection
        KASCADE_FAIL("plan: layer " << in.layer << " has role dense");
      case Role::Layer0:
        store_.put(slot, in.n, pooled_top_k(in, params_, pooling_));
        return KeySet{};
      case Role::Anchor: {
        ref::Selection sel = pooled_top_k(in, params_, pooling_);
        store_.put(slot, in.n, sel);
        return KeySet{false, std::move(sel)};
      }
      case Role::Reuse:
        break;
    }
    const ref::Selection& anchor = store_.get(slot, in.n, in.layer);
    // All-heads pooling already gives every kv head the same row: the head map does not apply.
    if (pooling_ == Pooling::All) return KeySet{false, anchor};
    return KeySet{false, remap_sets(anchor, plan_.head_map[static_cast<size_t>(in.layer)])};
  }

 private:
  SparsityParams params_;
  const Plan& plan_;
  Pooling pooling_;
  const char* name_;
  SelectionStore store_;
};

class StreamingPolicy final : public SelectionPolicy {
 public:
  explicit StreamingPolicy(const PolicyContext& ctx) : params_(ctx.params) {}
  const char* name() const override { return "streaming"; }
  KeySet select(const LayerInputs& in) override {
    if (in.layer == 0) return KeySet{};
    return KeySet{false, streaming_selection(in, params_)};
  }

 private:
  SparsityParams params_;
};

class QuestPolicy final : public SelectionPolicy {
 public:
  explicit QuestPolicy(const PolicyContext& ctx) : params_(ctx.params) {}
  const char* name() const override { return "quest"; }
  KeySet select(const LayerInputs& in) override {
    if (in.layer == 0 || in.phase == Phase::Prefill) return KeySet{};
    return KeySet{false, quest_selection(in, params_)};
  }

 private:
  SparsityParams params_;
};

class OmniKvPolicy final : public SelectionPolicy {
 public:
  explicit OmniKvPolicy(const PolicyContext& ctx)
      : params_(ctx.params), filters_(evenly_spaced_layers(ctx.layers, static_cast<int>(ctx.plan->anchors.size()))) {}
  const char* name() const override { return "omnikv"; }
  void reset() override { store_.clear(); }
  KeySet select(const LayerInputs& in) override {
    if (in.phase == Phase::Prefill) return KeySet{};
    // The filter layer at or before this one (layer 0 is always a filter layer).
    const auto next = std::upper_bound(filters_.begin(), filters_.end(), in.layer);
    const int filter = *(next - 1);
    if (filter == in.layer) {
      store_.put(filter, in.n, pooled_top_k(in, params_, Pooling::All));
      return KeySet{};
    }
    return KeySet{false, store_.get(filter, in.n, in.layer)};
  }

 private:
  SparsityParams params_;
  std::vector<int> filters_;
  SelectionStore store_;
};

class TidalPolicy final : public SelectionPolicy {
 public:
  explicit TidalPolicy(const PolicyContext& ctx)
      : params_(ctx.params),
        selectors_(tidal_selection_layers(ctx.layers, std::max(1, static_cast<int>(ctx.plan->anchors.size()) - 1))) {}
  const char* name() const override { return "tidal"; }
  void reset() override { store_.clear(); }
  KeySet select(const LayerInputs& in) override {
    if (in.phase == Phase::Prefill || in.layer < 2 || selectors_.empty()) return KeySet{};
    // The latest selection layer at or before this one (layer 2 is always the first).
    const auto next = std::upper_bound(selectors_.begin(), selectors_.end(), in.layer);
    const int selector = *(next - 1);
    if (selector == in.layer) {
      store_.put(selector, in.n, pooled_top_k(in, params_, Pooling::All));
      return KeySet{};
    }
    return KeySet{false, store_.get(selector, in.n, in.layer)};
  }

 private:
  SparsityParams params_;
  std::vector<int> selectors_;
  SelectionStore store_;
};

}  // namespace

const std::vector<std::string>& policy_names() {
  static const std::vector<std::string> names = {"dense",     "oracle", "kascade", "kascade-pooled",
                                                 "streaming", "quest",  "omnikv",  "tidal"};
  return names;
}

std::unique_ptr<SelectionPolicy> make_policy(const std::string& name, const PolicyContext& ctx) {
  KASCADE_CHECK(ctx.layers >= 1, "policy '" << name << "': the model must have at least one layer");
  const bool needs_plan = name == "kascade" || name == "kascade-pooled" || name == "omnikv" || name == "tidal";
  KASCADE_CHECK(!needs_plan || ctx.plan != nullptr, "policy '" << name << "' needs a plan (--plan)");
  if (name == "dense") return std::make_unique<DensePolicy>();
  if (name == "oracle") return std::make_unique<OraclePolicy>(ctx);
  if (name == "kascade") return std::make_unique<KascadePolicy>(ctx, ctx.plan->sparsity.pooling, "kascade");
  if (name == "kascade-pooled") return std::make_unique<KascadePolicy>(ctx, Pooling::All, "kascade-pooled");
  if (name == "streaming") return std::make_unique<StreamingPolicy>(ctx);
  if (name == "quest") return std::make_unique<QuestPolicy>(ctx);
  if (name == "omnikv") return std::make_unique<OmniKvPolicy>(ctx);
  if (name == "tidal") return std::make_unique<TidalPolicy>(ctx);
  std::string known;
  for (const std::string& n : policy_names()) known += (known.empty() ? "" : ", ") + n;
  KASCADE_FAIL("unknown policy '" << name << "' (known: " << known << ")");
}

ref::Call make_call(const LayerInputs& in, const SparsityParams& params, Role role, Pooling pooling) {
  ref::Call call;
  call.phase = in.phase;
  call.role = role;
  call.params = params;
  call.params.pooling = pooling;
  call.p0 = in.phase == Phase::Prefill ? in.p0() : 0;
  return call;
}

double attend_layer(SelectionPolicy& policy, const SparsityParams& params, const LayerInputs& in, float* out) {
  KASCADE_CHECK(in.hq >= 1 && in.hkv >= 1 && in.hq % in.hkv == 0 && in.nq >= 1 && in.n >= in.nq && in.d >= 1,
                "layer " << in.layer << ": bad attention shape hq=" << in.hq << " hkv=" << in.hkv << " nq=" << in.nq
                         << " n=" << in.n << " d=" << in.d);
  const KeySet keys = policy.select(in);
  const size_t out_size = static_cast<size_t>(in.hq) * in.nq * in.d;
  const int group = in.hq / in.hkv;
  if (keys.dense) {
    const ref::Call call = make_call(in, params, Role::Dense, Pooling::Group);
    const ref::Result r = ref::attend(call, in.q, in.k, in.v, in.hq, in.hkv, in.nq, in.n, in.d);
    std::copy(r.out.begin(), r.out.begin() + static_cast<std::ptrdiff_t>(out_size), out);
    double attended = 0;
    for (int t = in.p0(); t < in.n; ++t) attended += static_cast<double>(t + 1);
    return attended * in.hq;
  }
  const ref::Call call = make_call(in, params, Role::Reuse, Pooling::Group);
  const ref::Result r = ref::attend(call, in.q, in.k, in.v, in.hq, in.hkv, in.nq, in.n, in.d, &keys.selection);
  std::copy(r.out.begin(), r.out.begin() + static_cast<std::ptrdiff_t>(out_size), out);
  double attended = 0;
  const ref::Selection& sel = keys.selection;
  for (int g = 0; g < in.hkv; ++g) {
    for (int tau = 0; tau < sel.num_tiles; ++tau) {
      if (in.phase == Phase::Decode) {
        attended += sel.row_count(g, tau);
        continue;
      }
      const int b = ref::tile_prefix(call, tau, in.n);
      const int e = std::min(in.n, b + params.tile);
      // Each query t of the tile reads the selection plus the diagonal keys b..t.
      for (int t = b; t < e; ++t) attended += sel.row_count(g, tau) + (t - b + 1);
    }
  }
  return attended * group;
}

ref::Selection pooled_top_k(const LayerInputs& in, const SparsityParams& params, Pooling pooling) {
  const ref::Call call = make_call(in, params, Role::Anchor, pooling);
  const ref::Pooled pooled = ref::pooled_mass(call, in.q, in.k, in.hq, in.hkv, in.nq, in.n, in.d);
  const int tiles = pooled.num_tiles;
  ref::Selection sel = ref::Selection::empty(in.hkv, tiles, selection_width(call, tiles, in.n));
  for (int g = 0; g < in.hkv; ++g) {
    const int set = pooling == Pooling::All ? 0 : g;
    for (int tau = 0; tau < tiles; ++tau) {
      const int b = pooled.prefix[static_cast<size_t>(tau)];
      set_row(sel, g, tau, top_k_keys(pooled.tile_mass(set, tau), b, ref::tile_budget(call, tau, in.n)));
    }
  }
  return sel;
}

ref::Selection streaming_selection(const LayerInputs& in, const SparsityParams& params) {
  const ref::Call call = make_call(in, params, Role::Reuse, Pooling::Group);
  const int tiles = ref::num_query_tiles(call, in.nq, in.n);
  ref::Selection sel = ref::Selection::empty(in.hkv, tiles, selection_width(call, tiles, in.n));
  for (int tau = 0; tau < tiles; ++tau) {
    const int b = ref::tile_prefix(call, tau, in.n);
    const int k = ref::tile_budget(call, tau, in.n);  // k <= b
    const int sinks = std::min(kSinkTokens, k);
    std::vector<int32_t> keys;
    for (int i = 0; i < sinks; ++i) keys.push_back(i);
    for (int i = b - (k - sinks); i < b; ++i) keys.push_back(i);
    for (int g = 0; g < in.hkv; ++g) set_row(sel, g, tau, keys);
  }
  return sel;
}

ref::Selection quest_selection(const LayerInputs& in, const SparsityParams& params) {
  KASCADE_CHECK(in.phase == Phase::Decode, "quest selects in decode only (layer " << in.layer << " is a prefill call)");
  const ref::Call call = make_call(in, params, Role::Reuse, Pooling::Group);
  const int k = ref::tile_budget(call, 0, in.n);
  const int pages = (in.n + kQuestPage - 1) / kQuestPage;
  const int group = in.hq / in.hkv;
  ref::Selection sel = ref::Selection::empty(in.hkv, 1, k);
  std::vector<double> page_bound(static_cast<size_t>(pages));
  std::vector<float> lo(static_cast<size_t>(in.d)), hi(static_cast<size_t>(in.d));
  for (int g = 0; g < in.hkv; ++g) {
    const float* kg = in.k + static_cast<size_t>(g) * in.n * in.d;
    for (int p = 0; p < pages; ++p) {
      // Per-dimension min and max of the page's keys: the page's metadata in Quest.
      const int first = p * kQuestPage, last = std::min(in.n, first + kQuestPage);
      std::copy(kg + static_cast<size_t>(first) * in.d, kg + static_cast<size_t>(first + 1) * in.d, lo.begin());
      hi = lo;
      for (int i = first + 1; i < last; ++i) {
        for (int c = 0; c < in.d; ++c) {
          const float x = kg[static_cast<size_t>(i) * in.d + c];
          lo[static_cast<size_t>(c)] = std::min(lo[static_cast<size_t>(c)], x);
          hi[static_cast<size_t>(c)] = std::max(hi[static_cast<size_t>(c)], x);
        }
      }
      // Upper bound of q.k over the page for each head of the group; the page keeps the largest.
      double best = -std::numeric_limits<double>::infinity();
      for (int h = g * group; h < (g + 1) * group; ++h) {
        const float* q = in.q + static_cast<size_t>(h) * in.d;  // decode: nq = 1
        double bound = 0;
        for (int c = 0; c < in.d; ++c) {
          bound += std::max(static_cast<double>(q[c]) * lo[static_cast<size_t>(c)],
                            static_cast<double>(q[c]) * hi[static_cast<size_t>(c)]);
        }
        best = std::max(best, bound);
      }
      page_bound[static_cast<size_t>(p)] = best;
    }
    // Every key scores its page's bound: the top k keys are whole pages in bound order, the
    // last one cut to the budget from its lowest position (ties toward the lower index).
    std::vector<double> key_score(static_cast<size_t>(in.n));
    for (int i = 0; i < in.n; ++i) key_score[static_cast<size_t>(i)] = page_bound[static_cast<size_t>(i / kQuestPage)];
    set_row(sel, g, 0, top_k_keys(key_score.data(), in.n, k));
  }
  return sel;
}

ref::Selection remap_sets(const ref::Selection& source, const std::vector<int>& map) {
  ref::Selection out = ref::Selection::empty(static_cast<int>(map.size()), source.num_tiles, source.k_max);
  for (size_t g = 0; g < map.size(); ++g) {
    const int from = map[g];
    KASCADE_CHECK(from >= 0 && from < source.num_sets,
                  "head map entry " << g << " = " << from << " is not a selection row in [0, " << source.num_sets << ")");
    for (int tau = 0; tau < source.num_tiles; ++tau) {
      std::copy(source.row(from, tau), source.row(from, tau) + source.k_max, out.row(static_cast<int>(g), tau));
      out.count[g * static_cast<size_t>(source.num_tiles) + tau] = source.row_count(from, tau);
    }
  }
  return out;
}

std::vector<int> evenly_spaced_layers(int layers, int count) {
  KASCADE_CHECK(layers >= 1 && count >= 1 && count <= layers,
                "filter layers: need 1 <= count <= layers, got count " << count << " of " << layers << " layers");
  std::vector<int> out;
  for (int i = 0; i < count; ++i) out.push_back(static_cast<int>(static_cast<int64_t>(i) * layers / count));
  return out;
}

std::vector<int> tidal_selection_layers(int layers, int requested) {
  KASCADE_CHECK(layers >= 1 && requested >= 1,
                "tidal selection layers: need layers >= 1 and count >= 1, got " << requested << " of " << layers);
  std::vector<int> out;
  if (layers <= 2) return out;  // no layer after the two dense ones
  const int span = 2 * (layers - 2) / 3;
  const int count = std::min(requested, std::max(1, span));
  for (int i = 0; i < count; ++i) out.push_back(2 + static_cast<int>(static_cast<int64_t>(i) * span / count));
  return out;
}

}  // namespace kascade::eval
