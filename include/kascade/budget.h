// kascade/budget.h — the SPEC's top-k budget and tile arithmetic, the one source of truth.
//
// Usable from host and device code so that the CPU oracle and every kernel compute the same
// k. SPEC 3: k(n) = min(n, max(k_min, floor(rho * n))), floor computed in IEEE double,
// optionally rounded up to a multiple of `k_multiple` but never above n.
// SPEC 5: prefill tiles of T positions aligned at p0; tile tau starts at b = p0 + tau * T.
//
//   int k = kascade::budget_k(n, 0.1, 128, 1);
//   int tiles = kascade::num_tiles(p0, p1, 32);
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define KASCADE_HD __host__ __device__
#else
#define KASCADE_HD
#endif

namespace kascade {

constexpr double kDefaultRho = 0.10;
constexpr int kDefaultKMin = 128;
constexpr int kDefaultTile = 32;
constexpr int kDefaultKCal = 64;

// Budget of the top-k for n candidates (SPEC 3), rounded up to k_multiple, capped at n.
KASCADE_HD constexpr int64_t budget_k(int64_t n, double rho, int64_t k_min, int64_t k_multiple = 1) {
  if (n <= 0) return 0;
  // floor(rho * n) in IEEE double; rho * n is non-negative so truncation is floor.
  const int64_t frac = static_cast<int64_t>(rho * static_cast<double>(n));
  int64_t k = frac > k_min ? frac : k_min;
  if (k > n) k = n;
  if (k_multiple > 1) {
    k = (k + k_multiple - 1) / k_multiple * k_multiple;
    if (k > n) k = n;
  }
  return k;
}

// Number of query tiles of size T covering positions p0..p1-1 (aligned at p0).
KASCADE_HD constexpr int64_t num_tiles(int64_t p0, int64_t p1, int64_t tile) {
  return p1 > p0 ? (p1 - p0 + tile - 1) / tile : 0;
}

// First position of tile tau (its prefix length b: the number of candidate keys before it).
KASCADE_HD constexpr int64_t tile_begin(int64_t p0, int64_t tau, int64_t tile) { return p0 + tau * tile; }

// One past the last position of tile tau, clipped to p1.
KASCADE_HD constexpr int64_t tile_end(int64_t p0, int64_t p1, int64_t tau, int64_t tile) {
  const int64_t e = p0 + (tau + 1) * tile;
  return e < p1 ? e : p1;
}

// Budget of prefill tile starting at b (SPEC 5): rolling k(b), or fixed min(b, k(p1)).
KASCADE_HD constexpr int64_t tile_budget(bool rolling, int64_t b, int64_t p1, double rho, int64_t k_min,
                                         int64_t k_multiple = 1) {
  if (rolling) return budget_k(b, rho, k_min, k_multiple);
  const int64_t kf = budget_k(p1, rho, k_min, k_multiple);
  return kf < b ? kf : b;
}

// Largest tile budget of a chunk: the size of the selection buffer's last axis.
KASCADE_HD constexpr int64_t max_tile_budget(bool rolling, int64_t p0, int64_t p1, int64_t tile, double rho,
                                             int64_t k_min, int64_t k_multiple = 1) {
  const int64_t nt = num_tiles(p0, p1, tile);
  if (nt == 0) return 0;
  // Both budgets are non-decreasing in b, so the last tile has the largest.
  return tile_budget(rolling, tile_begin(p0, nt - 1, tile), p1, rho, k_min, k_multiple);
}

}  // namespace kascade
