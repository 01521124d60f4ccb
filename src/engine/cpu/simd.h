// src/engine/cpu/simd.h — eight-lane fp32 vectors (GCC/clang vector extensions) shared by the
// CPU kernels: one AVX register on the AVX2 clones, two SSE registers on the portable path.
// KASCADE_SIMD_CLONES builds a function twice on x86-64 GCC (AVX2+FMA and baseline), chosen at
// load time, so the build stays portable while machines with AVX2 get 256-bit FMA.
// Internal to the engine.
#pragma once

#include <cstdint>
#include <cstring>

// The helpers are inlined file-local functions: the -Wpsabi note about passing 32-byte vectors
// without AVX concerns no real ABI boundary.
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// x86-64-v3 (AVX2, FMA, F16C...), not arch=haswell: GCC dispatches an arch=CPU clone on the
// CPU model, so AMD processors with the same instructions ran the baseline clone.
#define KASCADE_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KASCADE_SIMD_CLONES
#endif

namespace kascade::engine::cpu::simd {

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

inline v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store8(float* p, const v8& v) { std::memcpy(p, &v, sizeof(v)); }
// A shuffle of lane 0, not v8{x, ..., x} (or x * v): GCC lowers such a constructor in an inline
// helper before it is inlined into the AVX2 clone, which then builds the vector from eight
// inserts; the shuffle becomes one vbroadcastss there.
inline v8 splat8(float x) {
  v8 v = {};
  v[0] = x;
  return __builtin_shuffle(v, v8i{});
}
inline float sum8(const v8& v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }
inline float max8(const v8& v) {
  float m = v[0];
  for (int i = 1; i < 8; ++i) m = m > v[i] ? m : v[i];
  return m;
}

// exp(x) for x in about [-87, 88] (clamped outside), Cephes' expf polynomial: about 2 ulp.
inline v8 exp8(v8 x) {
  const v8 lo = splat8(-87.3f), hi = splat8(88.3f);
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const v8 fx = x * 1.44269504088896341f + 0.5f;
  v8i n = __builtin_convertvector(fx, v8i);  // truncates toward zero: round down below
  n += (__builtin_convertvector(n, v8) > fx);  // -1 where the truncation went up
  const v8 nf = __builtin_convertvector(n, v8);
  const v8 r = x - nf * 0.693359375f - nf * -2.12194440e-4f;
  v8 p = splat8(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const v8 y = p * r * r + r + 1.0f;
  const v8i bits = (n + 127) << 23;
  v8 two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return y * two_n;
}

}  // namespace kascade::engine::cpu::simd
