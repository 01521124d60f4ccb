// src/reference/attend.cpp — one attention call of one layer for one sequence (SPEC 3-5).
//
// Decode and prefill share one description: a call is a list of query tiles, and tile tau has
// a prefix b (its candidates are keys < b) and query positions t_begin..t_end-1, each seeing
// keys 0..t. Decode is the single tile {b = n, t = n-1}: every key is a candidate and the
// diagonal b..t is empty. Prefill tile tau is {b = p0 + tau*T, t = b..min(b+T, n)-1}.
//
// The call runs in two passes, each parallel over heads:
//   1. selection (Dense, Anchor): per (set, tile) pool the exact softmax rows of the set's
//      heads over the tile's queries into per-key masses, and keep the top k_tau candidates;
//   2. output: per (query head, query) one softmax over its key list — 0..t (Dense), or the
//      selection row of its set followed by the diagonal keys b..t (Anchor, Reuse).
// Dense uses the same row routine with the full list, so rho = 1 reproduces it bit for bit.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "kascade/budget.h"
#include "kascade/error.h"
#include "kascade/reference.h"
#include "parallel.h"

namespace kascade::ref {

Selection Selection::empty(int num_sets, int num_tiles, int k_max) {
  KASCADE_CHECK(num_sets >= 0 && num_tiles >= 0 && k_max >= 0,
                "Selection: negative shape [" << num_sets << ", " << num_tiles << ", " << k_max << "]");
  Selection s;
  s.num_sets = num_sets;
  s.num_tiles = num_tiles;
  s.k_max = k_max;
  s.index.assign(static_cast<size_t>(num_sets) * num_tiles * k_max, -1);
  s.count.assign(static_cast<size_t>(num_sets) * num_tiles, 0);
  return s;
}

int num_selection_sets(const Call& call, int hkv) { return call.params.pooling == Pooling::All ? 1 : hkv; }

int num_query_tiles(const Call& call, int nq, int n) {
  if (call.phase == Phase::Decode) return 1;
  return static_cast<int>(num_tiles(n - nq, n, call.params.tile));
}

int tile_prefix(const Call& call, int tau, int n) {
  if (call.phase == Phase::Decode) return n;
  return static_cast<int>(tile_begin(call.p0, tau, call.params.tile));
}

int tile_budget(const Call& call, int tau, int n) {
  const SparsityParams& sp = call.params;
  if (call.phase == Phase::Decode) return static_cast<int>(budget_k(n, sp.rho, sp.k_min, sp.k_multiple));
  return static_cast<int>(
      kascade::tile_budget(sp.rolling(), tile_prefix(call, tau, n), n, sp.rho, sp.k_min, sp.k_multiple));
}

namespace detail {

// Checks the parts of a call that do not depend on tensor data.
void validate_call(const Call& call, int hq, int hkv, int nq, int n, int d) {
  const SparsityParams& sp = call.params;
  KASCADE_CHECK(hq >= 1 && hkv >= 1, "reference: head counts must be positive, got Hq=" << hq << " Hkv=" << hkv);
  KASCADE_CHECK(hq % hkv == 0, "reference: Hq=" << hq << " is not a multiple of Hkv=" << hkv);
  KASCADE_CHECK(d >= 1, "reference: head dimension must be positive, got D=" << d);
  KASCADE_CHECK(n >= 1, "reference: context length must be positive, got n=" << n);
  KASCADE_CHECK(nq >= 1, "reference: number of queries must be positive, got nq=" << nq);
  KASCADE_CHECK(sp.rho >= 0.0 && sp.rho <= 1.0, "reference: rho (a fraction) must be in [0, 1], got " << sp.rho);
  KASCADE_CHECK(sp.k_min >= 0, "reference: k_min must be >= 0, got " << sp.k_min);
  KASCADE_CHECK(sp.k_multiple >= 1, "reference: k_multiple must be >= 1, got " << sp.k_multiple);
  KASCADE_CHECK(sp.tile >= 1, "reference: tile must be >= 1, got " << sp.tile);
  KASCADE_CHECK(std::isnan(sp.scale) || std::isfinite(sp.scale), "reference: scale must be finite, got " << sp.scale);
  if (call.phase == Phase::Decode) {
    KASCADE_CHECK(nq == 1, "reference: decode takes exactly one query, got nq=" << nq);
  } else {
    KASCADE_CHECK(nq <= n, "reference: prefill has nq=" << nq << " queries but only n=" << n << " keys");
    KASCADE_CHECK(call.p0 == n - nq, "reference: prefill p0=" << call.p0 << " does not match n - nq = " << n << " - "
                                                               << nq << " = " << (n - nq));
  }
  if (call.role != Role::Reuse) {
    KASCADE_CHECK(call.head_map.empty(), "reference: head_map applies to role reuse only (role is "
                                             << to_string(call.role) << ")");
  } else if (!call.head_map.empty()) {
    KASCADE_CHECK(static_cast<int>(call.head_map.size()) == hkv,
                  "reference: head_map has " << call.head_map.size() << " entries, expected Hkv=" << hkv);
    for (int g = 0; g < hkv; ++g) {
      KASCADE_CHECK(call.head_map[g] >= 0 && call.head_map[g] < hkv,
                    "reference: head_map[" << g << "]=" << call.head_map[g] << " is not a kv head in [0, " << hkv
                                           << ")");
    }
  }
}

void check_finite(const float* data, size_t count, const char* what) {
  KASCADE_CHECK(data != nullptr || count == 0, "reference: " << what << " is a null pointer");
  for (size_t i = 0; i < count; ++i) {
    KASCADE_CHECK(std::isfinite(data[i]), "reference: " << what << " element " << i << " is " << data[i]
                                                        << " (inputs must be finite)");
  }
}

}  // namespace detail

void validate_selection(const Call& call, const Selection& sel, int hkv, int nq, int n) {
  const int sets = num_selection_sets(call, hkv);
  const int tiles = num_query_tiles(call, nq, n);
  KASCADE_CHECK(sel.num_sets == sets && sel.num_tiles == tiles && sel.k_max >= 0,
                "selection has shape [" << sel.num_sets << ", " << sel.num_tiles << ", " << sel.k_max
                                        << "], expected [" << sets << ", " << tiles << ", k_max] (pooling "
                                        << to_string(call.params.pooling) << ", " << to_string(call.phase) << ")");
  KASCADE_CHECK(sel.index.size() == static_cast<size_t>(sets) * tiles * sel.k_max &&
                    sel.count.size() == static_cast<size_t>(sets) * tiles,
                "selection: index/count arrays do not match its shape");
  for (int s = 0; s < sets; ++s) {
    for (int tau = 0; tau < tiles; ++tau) {
      const int32_t* row = sel.row(s, tau);
      const int b = tile_prefix(call, tau, n);
      int valid = 0;
      while (valid < sel.k_max && row[valid] != -1) {
        KASCADE_CHECK(row[valid] >= 0 && row[valid] < b,
                      "selection [" << s << ", " << tau << ", " << valid << "] = " << row[valid]
                                    << " is not a candidate key of the tile (expected 0 <= index < " << b << ")");
        KASCADE_CHECK(valid == 0 || row[valid] > row[valid - 1],
                      "selection [" << s << ", " << tau << "] is not strictly ascending at entry " << valid << " ("
                                    << row[valid - 1] << " then " << row[valid] << ")");
        ++valid;
      }
      for (int j = valid; j < sel.k_max; ++j) {
        KASCADE_CHECK(row[j] == -1, "selection [" << s << ", " << tau << ", " << j << "] = " << row[j]
                                                  << " follows -1 padding (padding must come last)");
      }
      const int budget = tile_budget(call, tau, n);
      KASCADE_CHECK(valid <= budget, "selection [" << s << ", " << tau << "] has " << valid
                                                   << " keys, more than the tile's budget k=" << budget);
      KASCADE_CHECK(sel.row_count(s, tau) == valid, "selection [" << s << ", " << tau << "] count "
                                                                 << sel.row_count(s, tau) << " disagrees with its "
                                                                 << valid << " non-padding entries");
    }
  }
}

namespace {

// A validated single-sequence problem: q [Hq, nq, D], k/v [Hkv, n, D].
struct Problem {
  const Call& call;
  const float* q;
  const float* k;
  const float* v;
  int hq, hkv, nq, n, d;
  int group;         // G = Hq / Hkv
  int first_query;   // position of query 0: n - nq (decode: n - 1, prefill: p0)
  int sets;          // selection sets: Hkv, or 1 with pooling all
  int tiles;
  double scale;

  const float* q_row(int h, int t) const {
    return q + (static_cast<size_t>(h) * nq + (t - first_query)) * d;
  }
  const float* k_row(int g, int i) const { return k + (static_cast<size_t>(g) * n + i) * d; }
  const float* v_row(int g, int i) const { return v + (static_cast<size_t>(g) * n + i) * d; }
  // Query heads pooled into selection set s.
  int set_first_head(int s) const { return call.params.pooling == Pooling::All ? 0 : s * group; }
  int set_num_heads() const { return call.params.pooling == Pooling::All ? hq : group; }
  // Positions of tile tau: candidates are keys < b; queries t_begin..t_end-1.
  int prefix(int tau) const { return tile_prefix(call, tau, n); }
  int t_begin(int tau) const { return call.phase == Phase::Decode ? n - 1 : prefix(tau); }
  int t_end(int tau) const {
    return call.phase == Phase::Decode ? n : static_cast<int>(tile_end(call.p0, n, tau, call.params.tile));
  }
};

Problem make_problem(const Call& call, const float* q, const float* k, const float* v, int hq, int hkv, int nq,
                     int n, int d) {
  detail::validate_call(call, hq, hkv, nq, n, d);
  detail::check_finite(q, static_cast<size_t>(hq) * nq * d, "q");
  detail::check_finite(k, static_cast<size_t>(hkv) * n * d, "k");
  if (v != nullptr) detail::check_finite(v, static_cast<size_t>(hkv) * n * d, "v");  // null: pooled_mass()
  Problem p{call, q, k, v, hq, hkv, nq, n, d, hq / hkv, n - nq, num_selection_sets(call, hkv),
            num_query_tiles(call, nq, n), static_cast<double>(call.params.scale_for(d))};
  return p;
}

double dot_scaled(const float* a, const float* b, int d, double scale) {
  double acc = 0.0;
  for (int j = 0; j < d; ++j) acc += static_cast<double>(a[j]) * static_cast<double>(b[j]);
  return acc * scale;
}

// Adds, for every query t of tile tau and every head of set s, the exact causal softmax row
// over keys 0..t: probabilities of candidates (< b) into mass[i], of diagonal keys (b..t) into
// *diagonal. Summation order is fixed (heads, then queries, ascending).
void pool_tile(const Problem& p, int s, int tau, double* mass, double* diagonal) {
  const int b = p.prefix(tau);
  std::vector<double> weight;
  const int h0 = p.set_first_head(s);
  for (int h = h0; h < h0 + p.set_num_heads(); ++h) {
    const int g = h / p.group;
    for (int t = p.t_begin(tau); t < p.t_end(tau); ++t) {
      const float* qv = p.q_row(h, t);
      weight.resize(static_cast<size_t>(t) + 1);
      double row_max = -std::numeric_limits<double>::infinity();
      for (int i = 0; i <= t; ++i) {
        weight[i] = dot_scaled(qv, p.k_row(g, i), p.d, p.scale);
        row_max = std::max(row_max, weight[i]);
      }
      double total = 0.0;
      for (int i = 0; i <= t; ++i) {
        weight[i] = std::exp(weight[i] - row_max);
        total += weight[i];
      }
      const int last_candidate = std::min(b, t + 1);
      for (int i = 0; i < last_candidate; ++i) mass[i] += weight[i] / total;
      for (int i = b; i <= t; ++i) *diagonal += weight[i] / total;
    }
  }
}

// Writes the k largest of mass[0..b) into out, ascending by index; ties toward the lower index.
void select_top_k(const double* mass, int b, int k, int32_t* out) {
  std::vector<int32_t> order(b);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [mass](int32_t x, int32_t y) {
    return mass[x] > mass[y] || (mass[x] == mass[y] && x < y);
  });
  std::sort(order.begin(), order.begin() + k);
  std::copy(order.begin(), order.begin() + k, out);
}

// Softmax attention of one query over `keys` (any order; each key once) of kv head g.
// An empty key list gives a zero row (documented in reference.h).
void attend_row(const Problem& p, const float* qv, int g, const std::vector<int32_t>& keys, float* out) {
  if (keys.empty()) {
    std::fill(out, out + p.d, 0.0f);
    return;
  }
  std::vector<double> weight(keys.size());
  double row_max = -std::numeric_limits<double>::infinity();
  for (size_t j = 0; j < keys.size(); ++j) {
    weight[j] = dot_scaled(qv, p.k_row(g, keys[j]), p.d, p.scale);
    row_max = std::max(row_max, weight[j]);
  }
  double total = 0.0;
  for (double& w : weight) {
    w = std::exp(w - row_max);
    total += w;
  }
  std::vector<double> acc(p.d, 0.0);
  for (size_t j = 0; j < keys.size(); ++j) {
    const float* vv = p.v_row(g, keys[j]);
    for (int e = 0; e < p.d; ++e) acc[e] += weight[j] * static_cast<double>(vv[e]);
  }
  for (int e = 0; e < p.d; ++e) out[e] = static_cast<float>(acc[e] / total);
}

// Pass 1: the selection of every (set, tile); also the pooled masses when `pooled` is given.
Selection compute_selection(const Problem& p, Pooled* pooled) {
  const SparsityParams& sp = p.call.params;
  const int k_max =
      p.call.phase == Phase::Decode
          ? static_cast<int>(budget_k(p.n, sp.rho, sp.k_min, sp.k_multiple))
          : static_cast<int>(max_tile_budget(sp.rolling(), p.call.p0, p.n, sp.tile, sp.rho, sp.k_min, sp.k_multiple));
  Selection sel = Selection::empty(p.sets, p.tiles, k_max);
  if (pooled) {
    pooled->num_sets = p.sets;
    pooled->num_tiles = p.tiles;
    pooled->n = p.n;
    pooled->mass.assign(static_cast<size_t>(p.sets) * p.tiles * p.n, 0.0);
    pooled->diagonal.assign(static_cast<size_t>(p.sets) * p.tiles, 0.0);
    pooled->prefix.resize(p.tiles);
    for (int tau = 0; tau < p.tiles; ++tau) pooled->prefix[tau] = p.prefix(tau);
  }
  detail::parallel_for(p.sets, [&](int s) {
    std::vector<double> mass(p.n);
    for (int tau = 0; tau < p.tiles; ++tau) {
      std::fill(mass.begin(), mass.end(), 0.0);
      double diagonal = 0.0;
      pool_tile(p, s, tau, mass.data(), &diagonal);
      const int k = tile_budget(p.call, tau, p.n);
      select_top_k(mass.data(), p.prefix(tau), k, sel.row(s, tau));
      sel.count[static_cast<size_t>(s) * p.tiles + tau] = k;
      if (pooled) {
        std::copy(mass.begin(), mass.end(), pooled->mass.begin() + (static_cast<size_t>(s) * p.tiles + tau) * p.n);
        pooled->diagonal[static_cast<size_t>(s) * p.tiles + tau] = diagonal;
      }
    }
  });
  return sel;
}

// Selection set read by the query heads of kv head g.
int source_set(const Problem& p, int g) {
  if (p.call.params.pooling == Pooling::All) return 0;
  if (p.call.role == Role::Reuse && !p.call.head_map.empty()) return p.call.head_map[g];
  return g;
}

// Pass 2: the output [Hq, nq, D]. `sel` is null for Role::Dense and Layer0 (full causal rows).
std::vector<float> compute_output(const Problem& p, const Selection* sel) {
  std::vector<float> out(static_cast<size_t>(p.hq) * p.nq * p.d);
  detail::parallel_for(p.hkv, [&](int g) {
    const int s = sel ? source_set(p, g) : -1;
    std::vector<int32_t> keys;
    for (int tau = 0; tau < p.tiles; ++tau) {
      const int b = p.prefix(tau);
      for (int t = p.t_begin(tau); t < p.t_end(tau); ++t) {
        keys.clear();
        if (sel) {
          const int32_t* row = sel->row(s, tau);
          keys.assign(row, row + sel->row_count(s, tau));
          for (int i = b; i <= t; ++i) keys.push_back(i);
        } else {
          for (int i = 0; i <= t; ++i) keys.push_back(i);
        }
        for (int h = g * p.group; h < (g + 1) * p.group; ++h) {
          float* dst = out.data() + (static_cast<size_t>(h) * p.nq + (t - p.first_query)) * p.d;
          attend_row(p, p.q_row(h, t), g, keys, dst);
        }
      }
    }
  });
  return out;
}

}  // namespace

Result attend(const Call& call, const float* q, const float* k, const float* v, int hq, int hkv, int nq, int n, int d,
              const Selection* reuse) {
  KASCADE_CHECK(v != nullptr, "reference: v is a null pointer");
  const Problem p = make_problem(call, q, k, v, hq, hkv, nq, n, d);
  Result result;
  if (call.role == Role::Reuse) {
    KASCADE_CHECK(reuse != nullptr, "reference: role reuse needs the anchor's selection");
    validate_selection(call, *reuse, hkv, nq, n);
    result.out = compute_output(p, reuse);
    return result;
  }
  KASCADE_CHECK(reuse == nullptr, "reference: a selection to reuse was given to role " << to_string(call.role));
  if (role_selects(call.role)) result.selection = compute_selection(p, nullptr);
  result.out = compute_output(p, call.role == Role::Anchor ? &result.selection : nullptr);
  return result;
}

Pooled pooled_mass(const Call& call, const float* q, const float* k, int hq, int hkv, int nq, int n, int d) {
  const Problem p = make_problem(call, q, k, nullptr, hq, hkv, nq, n, d);
  Pooled pooled;
  compute_selection(p, &pooled);
  return pooled;
}

}  // namespace kascade::ref
