// SPEC 6 from statistics to choices: the coverage and score matrices, layer scores, the exact
// dynamic program over anchor sets and the head map.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kascade/calibrate.h"
#include "kascade/error.h"

namespace kascade {

// ---- CoverageMatrix / LayerScores ---------------------------------------------------------------
CoverageMatrix::CoverageMatrix(int num_layers, int num_kv_heads) : num_layers_(num_layers), num_kv_heads_(num_kv_heads) {
  KASCADE_CHECK(num_layers >= 1 && num_kv_heads >= 1, "CoverageMatrix: needs num_layers >= 1 and num_kv_heads >= 1, got "
                                                          << num_layers << " and " << num_kv_heads);
  const size_t L = static_cast<size_t>(num_layers), H = static_cast<size_t>(num_kv_heads);
  values_.assign(L * L * H * H, 0.0);
}

size_t CoverageMatrix::index(int l1, int l2, int g1, int g2) const {
  KASCADE_CHECK(0 <= l1 && l1 <= l2 && l2 < num_layers_,
                "CoverageMatrix: layers (" << l1 << ", " << l2 << ") need 0 <= l1 <= l2 < " << num_layers_);
  KASCADE_CHECK(0 <= g1 && g1 < num_kv_heads_ && 0 <= g2 && g2 < num_kv_heads_,
                "CoverageMatrix: kv heads (" << g1 << ", " << g2 << ") out of range 0.." << num_kv_heads_ - 1);
  const size_t L = static_cast<size_t>(num_layers_), H = static_cast<size_t>(num_kv_heads_);
  return ((static_cast<size_t>(l1) * L + static_cast<size_t>(l2)) * H + static_cast<size_t>(g1)) * H +
         static_cast<size_t>(g2);
}

double& CoverageMatrix::at(int l1, int l2, int g1, int g2) { return values_[index(l1, l2, g1, g2)]; }
double CoverageMatrix::at(int l1, int l2, int g1, int g2) const { return values_[index(l1, l2, g1, g2)]; }

LayerScores::LayerScores(int num_layers) : num_layers_(num_layers) {
  KASCADE_CHECK(num_layers >= 1, "LayerScores: num_layers must be >= 1, got " << num_layers);
  values_.assign(static_cast<size_t>(num_layers) * static_cast<size_t>(num_layers), 0.0);
}

size_t LayerScores::index(int l1, int l2) const {
  KASCADE_CHECK(0 <= l1 && l1 <= l2 && l2 < num_layers_,
                "LayerScores: layers (" << l1 << ", " << l2 << ") need 0 <= l1 <= l2 < " << num_layers_);
  return static_cast<size_t>(l1) * static_cast<size_t>(num_layers_) + static_cast<size_t>(l2);
}

double& LayerScores::at(int l1, int l2) { return values_[index(l1, l2)]; }
double LayerScores::at(int l1, int l2) const { return values_[index(l1, l2)]; }

// ---- scores -------------------------------------------------------------------------------------
LayerScores layer_scores(const CoverageMatrix& coverage, const std::vector<double>& importance) {
  const int L = coverage.num_layers(), H = coverage.num_kv_heads();
  KASCADE_CHECK(L >= 1, "layer_scores: empty coverage matrix");
  KASCADE_CHECK(importance.size() == static_cast<size_t>(L),
                "layer_scores: " << importance.size() << " importance values for " << L << " layers");
  LayerScores scores(L);
  for (int l2 = 0; l2 < L; ++l2) {
    const double w = importance[static_cast<size_t>(l2)];
    KASCADE_CHECK(std::isfinite(w), "layer_scores: importance of layer " << l2 << " is " << w);
    for (int l1 = 0; l1 <= l2; ++l1) {
      double sum_of_best = 0.0;
      for (int g2 = 0; g2 < H; ++g2) {
        double best = -std::numeric_limits<double>::infinity();
        for (int g1 = 0; g1 < H; ++g1) {
          const double c = coverage.at(l1, l2, g1, g2);
          KASCADE_CHECK(std::isfinite(c), "layer_scores: coverage C[" << l1 << "][" << l2 << "][" << g1 << "][" << g2
                                                                      << "] is " << c);
          best = std::max(best, c);
        }
        sum_of_best += best;
      }
      scores.at(l1, l2) = w * (sum_of_best / H);
    }
  }
  return scores;
}

namespace {

void check_anchor_set(const char* what, int num_layers, const std::vector<int>& anchors) {
  KASCADE_CHECK(!anchors.empty() && anchors[0] == 0, what << ": the anchor set must start with layer 0");
  for (size_t i = 0; i < anchors.size(); ++i) {
    KASCADE_CHECK(anchors[i] >= 0 && anchors[i] < num_layers,
                  what << ": anchor " << anchors[i] << " out of range 0.." << num_layers - 1);
    KASCADE_CHECK(i == 0 || anchors[i] > anchors[i - 1],
                  what << ": anchors must be strictly increasing, got " << anchors[i - 1] << " then " << anchors[i]);
  }
}

// The anchor of every layer, a(j) = max{a in A : a <= j}.
std::vector<int> anchor_of_layers(int num_layers, const std::vector<int>& anchors) {
  std::vector<int> owner(static_cast<size_t>(num_layers));
  size_t next = 0;
  for (int j = 0; j < num_layers; ++j) {
    if (next < anchors.size() && anchors[next] == j) ++next;
    owner[static_cast<size_t>(j)] = anchors[next - 1];
  }
  return owner;
}

}  // namespace

double anchor_score(const LayerScores& scores, const std::vector<int>& anchors) {
  check_anchor_set("anchor_score", scores.num_layers(), anchors);
  const std::vector<int> owner = anchor_of_layers(scores.num_layers(), anchors);
  double total = 0.0;
  for (int j = 0; j < scores.num_layers(); ++j) total += scores.at(owner[static_cast<size_t>(j)], j);
  return total;
}

// ---- the dynamic program ------------------------------------------------------------------------
//
// seg(a, e) = sum_{j=a}^{e-1} S[a][j] is the score of layers a..e-1 all served by anchor a.
// best[c][e] is the best score of layers 0..e-1 split into c segments whose first starts at 0, i.e.
// c anchors of which the last one's segment ends at e-1:
//   best[1][e] = seg(0, e)
//   best[c][e] = max over c-1 <= p < e of best[c-1][p] + seg(p, e)      (p: the c-th anchor)
// and the best set of m anchors scores best[m][L]. Each (c, e) scans O(L) values of p: O(m L^2).
// Scanning p upwards and keeping the first maximum makes ties take the latest anchor as early as
// possible, then the one before it, and so on.
std::vector<AnchorChoice> choose_anchors_range(const LayerScores& scores, int m_lo, int m_hi) {
  const int L = scores.num_layers();
  KASCADE_CHECK(L >= 1, "choose_anchors: empty score matrix");
  KASCADE_CHECK(1 <= m_lo && m_lo <= m_hi && m_hi <= L, "choose_anchors: anchor counts " << m_lo << ".." << m_hi
                                                                                       << " must satisfy 1 <= m_lo <= m_hi <= L = "
                                                                                       << L);
  const size_t W = static_cast<size_t>(L) + 1;
  // seg[a * W + e] for 0 <= a < e <= L.
  std::vector<double> seg(static_cast<size_t>(L) * W, 0.0);
  for (int a = 0; a < L; ++a) {
    double running = 0.0;
    for (int j = a; j < L; ++j) {
      const double s = scores.at(a, j);
      KASCADE_CHECK(std::isfinite(s), "choose_anchors: S[" << a << "][" << j << "] is " << s);
      running += s;
      seg[static_cast<size_t>(a) * W + static_cast<size_t>(j) + 1] = running;
    }
  }
  const double kUnreachable = -std::numeric_limits<double>::infinity();
  const size_t C = static_cast<size_t>(m_hi) + 1;
  std::vector<double> best(C * W, kUnreachable);
  std::vector<int> last_anchor(C * W, -1);
  for (int e = 1; e <= L; ++e) {
    best[1 * W + static_cast<size_t>(e)] = seg[static_cast<size_t>(e)];
    last_anchor[1 * W + static_cast<size_t>(e)] = 0;
  }
  for (int c = 2; c <= m_hi; ++c) {
    for (int e = c; e <= L; ++e) {
      double top = kUnreachable;
      int arg = -1;
      for (int p = c - 1; p < e; ++p) {
        const double v = best[static_cast<size_t>(c - 1) * W + static_cast<size_t>(p)] +
                         seg[static_cast<size_t>(p) * W + static_cast<size_t>(e)];
        if (v > top) {
          top = v;
          arg = p;
        }
      }
      best[static_cast<size_t>(c) * W + static_cast<size_t>(e)] = top;
      last_anchor[static_cast<size_t>(c) * W + static_cast<size_t>(e)] = arg;
    }
  }
  std::vector<AnchorChoice> choices;
  for (int m = m_lo; m <= m_hi; ++m) {
    AnchorChoice choice;
    choice.score = best[static_cast<size_t>(m) * W + static_cast<size_t>(L)];
    choice.anchors.assign(static_cast<size_t>(m), 0);
    int e = L;
    for (int c = m; c >= 1; --c) {
      const int p = last_anchor[static_cast<size_t>(c) * W + static_cast<size_t>(e)];
      choice.anchors[static_cast<size_t>(c) - 1] = p;
      e = p;
    }
    choices.push_back(std::move(choice));
  }
  return choices;
}

AnchorChoice choose_anchors(const LayerScores& scores, int m) {
  KASCADE_CHECK(1 <= m && m <= scores.num_layers(),
                "choose_anchors: anchor count m = " << m << " must satisfy 1 <= m <= L = " << scores.num_layers());
  return choose_anchors_range(scores, m, m).front();
}

// ---- head map -----------------------------------------------------------------------------------
HeadMap choose_head_map(const CoverageMatrix& coverage, const std::vector<int>& anchors) {
  const int L = coverage.num_layers(), H = coverage.num_kv_heads();
  check_anchor_set("choose_head_map", L, anchors);
  const std::vector<int> owner = anchor_of_layers(L, anchors);
  HeadMap map(static_cast<size_t>(L), std::vector<int>(static_cast<size_t>(H)));
  for (int j = 0; j < L; ++j) {
    const int a = owner[static_cast<size_t>(j)];
    for (int g2 = 0; g2 < H; ++g2) {
      int arg = g2;  // anchors: identity
      if (a != j) {
        double top = -std::numeric_limits<double>::infinity();
        for (int g1 = 0; g1 < H; ++g1) {
          const double c = coverage.at(a, j, g1, g2);
          KASCADE_CHECK(std::isfinite(c), "choose_head_map: coverage C[" << a << "][" << j << "][" << g1 << "][" << g2
                                                                         << "] is " << c);
          if (c > top) {  // strict: ties keep the lowest g1
            top = c;
            arg = g1;
          }
        }
      }
      map[static_cast<size_t>(j)][static_cast<size_t>(g2)] = arg;
    }
  }
  return map;
}

}  // namespace kascade
