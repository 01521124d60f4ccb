// src/reference/compare.cpp — SPEC 7 comparisons: selections by covered pooled mass, outputs by
// relative L2 error with NaN/Inf never passing.
#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "kascade/error.h"
#include "kascade/reference.h"

namespace kascade::ref {
namespace {

// SPEC 7: two selections are equivalent when their covered masses differ by at most this
// fraction of the larger one.
constexpr double kSelectionMassTolerance = 1e-3;

// "" when row[0..k_max) holds `count` strictly ascending candidates (< b) followed by -1 padding.
std::string row_problem(const int32_t* row, int k_max, int count, int b) {
  std::ostringstream os;
  if (count < 0 || count > k_max) {
    os << "count " << count << " outside [0, " << k_max << "]";
    return os.str();
  }
  for (int j = 0; j < k_max; ++j) {
    if (j < count) {
      if (row[j] < 0 || row[j] >= b) {
        os << "entry " << j << " = " << row[j] << " is not a candidate key (expected 0 <= index < " << b << ")";
        return os.str();
      }
      if (j > 0 && row[j] <= row[j - 1]) {
        os << "entries not strictly ascending at " << j << " (" << row[j - 1] << " then " << row[j] << ")";
        return os.str();
      }
    } else if (row[j] != -1) {
      os << "entry " << j << " = " << row[j] << " after the " << count << " counted entries (expected -1 padding)";
      return os.str();
    }
  }
  return "";
}

}  // namespace

double covered_mass(const Pooled& pooled, int set, int tau, const int32_t* idx, int count) {
  KASCADE_CHECK(set >= 0 && set < pooled.num_sets && tau >= 0 && tau < pooled.num_tiles,
                "covered_mass: (set " << set << ", tile " << tau << ") outside [" << pooled.num_sets << ", "
                                      << pooled.num_tiles << "]");
  const double* mass = pooled.tile_mass(set, tau);
  double total = 0.0;
  for (int j = 0; j < count; ++j) {
    KASCADE_CHECK(idx[j] >= 0 && idx[j] < pooled.n,
                  "covered_mass: key " << idx[j] << " outside [0, " << pooled.n << ")");
    total += mass[idx[j]];
  }
  return total + pooled.tile_diagonal(set, tau);
}

std::string compare_selections(const Pooled& pooled, const Selection& expected, const Selection& actual) {
  std::ostringstream os;
  for (const Selection* sel : {&expected, &actual}) {
    const char* which = sel == &expected ? "expected" : "actual";
    if (sel->num_sets != pooled.num_sets || sel->num_tiles != pooled.num_tiles ||
        sel->index.size() != static_cast<size_t>(sel->num_sets) * sel->num_tiles * sel->k_max ||
        sel->count.size() != static_cast<size_t>(sel->num_sets) * sel->num_tiles) {
      os << which << " selection has shape [" << sel->num_sets << ", " << sel->num_tiles << ", " << sel->k_max
         << "] (or inconsistent arrays), pooled masses have [" << pooled.num_sets << ", " << pooled.num_tiles
         << ", *]";
      return os.str();
    }
  }
  for (int s = 0; s < pooled.num_sets; ++s) {
    for (int tau = 0; tau < pooled.num_tiles; ++tau) {
      const int b = pooled.prefix[tau];
      for (const Selection* sel : {&expected, &actual}) {
        const std::string problem = row_problem(sel->row(s, tau), sel->k_max, sel->row_count(s, tau), b);
        if (!problem.empty()) {
          os << (sel == &expected ? "expected" : "actual") << " selection (set " << s << ", tile " << tau
             << "): " << problem;
          return os.str();
        }
      }
      const int count_expected = expected.row_count(s, tau);
      const int count_actual = actual.row_count(s, tau);
      const double mass_expected = covered_mass(pooled, s, tau, expected.row(s, tau), count_expected);
      const double mass_actual = covered_mass(pooled, s, tau, actual.row(s, tau), count_actual);
      const double larger = std::max(mass_expected, mass_actual);
      if (count_expected != count_actual || std::fabs(mass_expected - mass_actual) > kSelectionMassTolerance * larger) {
        os.precision(17);
        os << "selections differ at (set " << s << ", tile " << tau << "): covered mass " << mass_expected
           << " (expected, " << count_expected << " keys) vs " << mass_actual << " (actual, " << count_actual
           << " keys)";
        return os.str();
      }
    }
  }
  return "";
}

double relative_l2_error(const float* reference, const float* actual, size_t count) {
  double diff_sq = 0.0;
  double ref_sq = 0.0;
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(reference[i]) || !std::isfinite(actual[i])) return std::numeric_limits<double>::infinity();
    const double diff = static_cast<double>(actual[i]) - static_cast<double>(reference[i]);
    diff_sq += diff * diff;
    ref_sq += static_cast<double>(reference[i]) * static_cast<double>(reference[i]);
  }
  return ref_sq > 0.0 ? std::sqrt(diff_sq / ref_sq) : std::sqrt(diff_sq);
}

double output_tolerance(DType storage) {
  switch (storage) {
    case DType::BF16: return 1e-2;
    case DType::F16: return 2e-3;
    case DType::F32: return 1e-5;
    default: break;
  }
  KASCADE_FAIL("output_tolerance: no SPEC 7 tolerance for storage type " << dtype_name(storage));
}

std::string check_close(const char* what, const float* reference, const float* actual, size_t count,
                        double tolerance) {
  std::ostringstream os;
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(actual[i]) || !std::isfinite(reference[i])) {
      os << what << ": element " << i << " is " << actual[i] << " (reference " << reference[i]
         << "); NaN/Inf never passes";
      return os.str();
    }
  }
  const double error = relative_l2_error(reference, actual, count);
  if (!(error <= tolerance)) {
    os << what << ": relative L2 error " << error << " exceeds tolerance " << tolerance;
    return os.str();
  }
  return "";
}

}  // namespace kascade::ref
