// tests/reference/helpers.h — small builders shared by the oracle's tests.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "kascade/reference.h"

namespace kascade::ref::testing {

// Uniform values in [-scale, scale) from a fixed seed.
inline std::vector<float> random_values(size_t count, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(count);
  for (float& x : v) x = dist(rng);
  return v;
}

// A single-sequence problem with random q/k/v: q [Hq, nq, D], k/v [Hkv, n, D].
struct Case {
  int hq, hkv, nq, n, d;
  std::vector<float> q, k, v;
  Case(int hq_, int hkv_, int nq_, int n_, int d_, uint32_t seed, float magnitude = 1.0f)
      : hq(hq_), hkv(hkv_), nq(nq_), n(n_), d(d_),
        q(random_values(static_cast<size_t>(hq_) * nq_ * d_, seed, magnitude)),
        k(random_values(static_cast<size_t>(hkv_) * n_ * d_, seed + 1, magnitude)),
        v(random_values(static_cast<size_t>(hkv_) * n_ * d_, seed + 2)) {}

  Result run(const Call& call, const Selection* reuse = nullptr) const {
    return attend(call, q.data(), k.data(), v.data(), hq, hkv, nq, n, d, reuse);
  }
  Pooled pooled(const Call& call) const { return pooled_mass(call, q.data(), k.data(), hq, hkv, nq, n, d); }
};

inline Call make_call(Phase phase, Role role, int p0 = 0) {
  Call c;
  c.phase = phase;
  c.role = role;
  c.p0 = p0;
  return c;
}

// The valid entries of one selection row.
inline std::vector<int32_t> row_keys(const Selection& s, int set, int tau) {
  const int32_t* r = s.row(set, tau);
  return std::vector<int32_t>(r, r + s.row_count(set, tau));
}

}  // namespace kascade::ref::testing
