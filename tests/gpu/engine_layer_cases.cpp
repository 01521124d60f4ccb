// tests/gpu/engine_layer_cases.cpp — the CUDA engine's own kernels between the GEMMs and attention
// (src/engine/cuda/layer_kernels.h) and its device weight generator (device_weights.h), each
// against a host reference written here in fp64 on the same bf16/fp32 inputs:
//   engine_embed_rows    x[t] = table[ids[t]]; exact (a bf16 -> fp32 widening is exact)
//   engine_add_rms_norm  with/without delta, with/without row_ids; x exact, out within bf16 rounding
//   engine_qkv_epilogue  bias, q/k RMSNorm, RoPE (both pairings, position scale, positions past
//                        1e5) and the paged cache append; q_out, the written K/V slots, and every
//                        other pool element still poisoned
//   engine_swiglu        silu(gate) * up
//   engine_gemv          the one-row GEMM, in a multiple of 8
//   engine_fill_normal   the counter-hash normal of random_weights, element by element
//   engine_layer_errors  unsupported arguments throw kascade::Error before any launch
// Outputs are GuardedBuffers (sentinels around, NaN-poisoned payload): writes out of bounds and
// elements left unwritten both fail.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "device_weights.h"
#include "engine_case_util.h"
#include "gpu_test.h"
#include "kascade/error.h"
#include "layer_kernels.h"

namespace kascade::gpu_test {
namespace {

using namespace engine_cases;
namespace ec = ::kascade::engine::cuda;

const ec::bf16* as_bf16(const DeviceBuffer& d) { return static_cast<const ec::bf16*>(d.get()); }
ec::bf16* as_bf16(const GuardedBuffer& d) { return static_cast<ec::bf16*>(d.get()); }
std::vector<float> download_bf16(const GuardedBuffer& d, size_t count) {
  return widen(DType::BF16, download_all<uint16_t>(d, count));
}
std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// ---------------------------------------------------------------------------------------------
// embed_rows

struct EmbedSpec {
  int vocab = 1, dim = 1, tokens = 1;
  uint64_t seed = 1;
};

CaseResult run_embed(const EmbedSpec& s) {
  std::mt19937_64 rng(s.seed);
  const StorageArray table = normal_bf16(static_cast<size_t>(s.vocab) * s.dim, 1.f, rng);
  std::vector<int32_t> ids(static_cast<size_t>(s.tokens));
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % static_cast<uint64_t>(s.vocab));
  ids.front() = s.vocab - 1;  // the table's last row and its first
  ids.back() = 0;
  const DeviceBuffer d_table = device_copy(table.bits), d_ids = device_copy(ids);
  const size_t out_elems = static_cast<size_t>(s.tokens) * s.dim;
  GuardedBuffer d_x(out_elems * sizeof(float));
  ec::embed_rows(static_cast<const int32_t*>(d_ids.get()), s.tokens, as_bf16(d_table), s.dim,
                 static_cast<float*>(d_x.get()), nullptr);
  KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
  if (std::string g = check_all_guards({{&d_x, "x"}}); !g.empty()) return CaseResult::fail(g);
  const std::vector<float> x = download_all<float>(d_x, out_elems);
  std::vector<double> expected(out_elems);
  for (int t = 0; t < s.tokens; ++t) {
    for (int i = 0; i < s.dim; ++i) expected[static_cast<size_t>(t) * s.dim + i] = table.values[static_cast<size_t>(ids[t]) * s.dim + i];
  }
  // Widening bf16 to fp32 is exact: no tolerance.
  const std::string diff = compare_within("x", x, expected, [](size_t) { return 0.0; });
  return diff.empty() ? CaseResult::pass() : CaseResult::fail(diff);
}

// ---------------------------------------------------------------------------------------------
// add_rms_norm

struct RmsSpec {
  int stored_rows = 1;  // rows of x
  int rows = 1;         // output rows (= stored_rows without row_ids)
  int width = 1;
  bool delta = true;
  bool row_ids = false;
  float amplitude = 1.f;  // of x and delta; 1e-3 makes eps dominate the mean square
  float eps = 1e-5f;
  uint64_t seed = 1;
};

CaseResult run_rms(const RmsSpec& s) {
  std::mt19937_64 rng(s.seed);
  const size_t x_elems = static_cast<size_t>(s.stored_rows) * s.width;
  const std::vector<float> x0 = normal_floats(x_elems, 0.f, s.amplitude, rng);
  const std::vector<float> delta = normal_floats(x_elems, 0.f, s.amplitude, rng);
  const std::vector<float> weight = normal_floats(static_cast<size_t>(s.width), 1.f, 0.2f, rng);
  std::vector<int32_t> ids(static_cast<size_t>(s.stored_rows));
  std::iota(ids.begin(), ids.end(), 0);
  if (s.row_ids) std::shuffle(ids.begin(), ids.end(), rng);  // distinct rows in random order
  ids.resize(static_cast<size_t>(s.rows));

  GuardedBuffer d_x(x_elems * sizeof(float));
  upload_to(d_x, x0);
  const DeviceBuffer d_delta = device_copy(delta), d_weight = device_copy(weight), d_ids = device_copy(ids);
  const size_t out_elems = static_cast<size_t>(s.rows) * s.width;
  GuardedBuffer d_out(out_elems * 2);
  ec::add_rms_norm(static_cast<float*>(d_x.get()), s.delta ? static_cast<const float*>(d_delta.get()) : nullptr,
                   static_cast<const float*>(d_weight.get()), s.row_ids ? static_cast<const int32_t*>(d_ids.get()) : nullptr,
                   s.rows, s.width, s.eps, as_bf16(d_out), nullptr);
  KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
  if (std::string g = check_all_guards({{&d_x, "x"}, {&d_out, "out"}}); !g.empty()) return CaseResult::fail(g);

  // x: the gathered rows get x + delta (one fp32 addition, as on the device), the others keep x.
  std::vector<float> x_expected = x0;
  std::vector<double> out_expected(out_elems);
  for (int i = 0; i < s.rows; ++i) {
    const size_t r = static_cast<size_t>(ids[static_cast<size_t>(i)]);
    float* xr = x_expected.data() + r * s.width;
    if (s.delta) {
      for (int c = 0; c < s.width; ++c) xr[c] = xr[c] + delta[r * s.width + c];
    }
    double squares = 0;
    for (int c = 0; c < s.width; ++c) squares += static_cast<double>(xr[c]) * xr[c];
    const double inv = 1.0 / std::sqrt(squares / s.width + static_cast<double>(s.eps));
    for (int c = 0; c < s.width; ++c) out_expected[static_cast<size_t>(i) * s.width + c] = xr[c] * inv * weight[static_cast<size_t>(c)];
  }
  const std::vector<float> x = download_all<float>(d_x, x_elems);
  std::string diff = compare_within("x", x, to_double(x_expected), [](size_t) { return 0.0; });
  if (!diff.empty()) return CaseResult::fail(diff);
  // out: bf16 rounding moves a value by at most 2^-8 of itself; the fp32 sum of <= 8192 squares
  // and rsqrtf add at most 8192 * 2^-24 + 2^-22 < 2^-10 relative to the scale. 2^-8 + 2^-10 of |ref|.
  const std::vector<float> out = download_bf16(d_out, out_elems);
  diff = compare_within("out", out, out_expected,
                        [&](size_t i) { return (kBf16HalfUlp + 1.0 / 1024) * std::fabs(out_expected[i]) + 1e-30; });
  return diff.empty() ? CaseResult::pass() : CaseResult::fail(diff);
}

// ---------------------------------------------------------------------------------------------
// qkv_epilogue

struct SeqTokens {
  int first = 0;  // position of the segment's first token
  int count = 1;
};

struct QkvSpec {
  int hq = 9, hkv = 3, head_dim = 64;
  ec::RopePairs pairs = ec::RopePairs::Adjacent;
  bool bias = false, q_norm = false, k_norm = false;
  float position_scale = 1.f;
  double theta = 10000;
  float amplitude = 1.f;
  int page_size = 16;
  int stride_pad = 0;  // extra elements after each token row and after each page of the pool
  std::vector<SeqTokens> segments = {{0, 1}, {14, 7}, {37, 40}, {100003, 2}};
  uint64_t seed = 1;
};

std::string describe(const QkvSpec& s) {
  std::ostringstream os;
  os << "Hq=" << s.hq << ",Hkv=" << s.hkv << ",D=" << s.head_dim
     << (s.pairs == ec::RopePairs::Adjacent ? ",rope=adjacent" : ",rope=halves") << ",bias=" << s.bias
     << ",q_norm=" << s.q_norm << ",k_norm=" << s.k_norm << ",pos_scale=" << s.position_scale << ",theta=" << s.theta
     << ",amp=" << s.amplitude << ",page=" << s.page_size << ",pad=" << s.stride_pad << ",segments=";
  for (size_t i = 0; i < s.segments.size(); ++i) os << (i ? ";" : "") << s.segments[i].first << "+" << s.segments[i].count;
  os << ",seed=" << s.seed;
  return os.str();
}

CaseResult run_qkv(const QkvSpec& s) {
  std::mt19937_64 rng(s.seed);
  const int d = s.head_dim, half = d / 2, heads = s.hq + 2 * s.hkv, row_width = heads * d;

  // Tokens, positions and a page table per segment (its own sequence) over a shared pool whose
  // pages are handed out in random order, with a few pages no token touches.
  std::vector<int32_t> positions, slots;
  std::vector<std::vector<int32_t>> tables(s.segments.size());
  int touched_pages = 0;
  for (const SeqTokens& seg : s.segments) {
    touched_pages += (seg.first + seg.count - 1) / s.page_size - seg.first / s.page_size + 1;
  }
  const int pool_pages = touched_pages + 3;
  std::vector<int32_t> free_pages(static_cast<size_t>(pool_pages));
  std::iota(free_pages.begin(), free_pages.end(), 0);
  std::shuffle(free_pages.begin(), free_pages.end(), rng);
  size_t next_free = 0;
  for (size_t q = 0; q < s.segments.size(); ++q) {
    const SeqTokens& seg = s.segments[q];
    tables[q].assign(static_cast<size_t>((seg.first + seg.count - 1) / s.page_size + 1), -1);
    for (int pos = seg.first; pos < seg.first + seg.count; ++pos) {
      int32_t& page = tables[q][static_cast<size_t>(pos / s.page_size)];
      if (page < 0) page = free_pages[next_free++];
      positions.push_back(pos);
      slots.push_back(page * s.page_size + pos % s.page_size);
    }
  }
  const int tokens = static_cast<int>(positions.size());
  const int64_t token_stride = static_cast<int64_t>(s.hkv) * d + s.stride_pad;
  const int64_t page_stride = token_stride * s.page_size + s.stride_pad;
  const size_t pool_elems = static_cast<size_t>(pool_pages) * static_cast<size_t>(page_stride);

  const std::vector<float> qkv = normal_floats(static_cast<size_t>(tokens) * row_width, 0.f, s.amplitude, rng);
  const std::vector<float> bias = normal_floats(static_cast<size_t>(row_width), 0.f, 0.5f * s.amplitude, rng);
  const std::vector<float> q_norm = normal_floats(static_cast<size_t>(d), 1.f, 0.2f, rng);
  const std::vector<float> k_norm = normal_floats(static_cast<size_t>(d), 1.f, 0.2f, rng);
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) inv_freq[static_cast<size_t>(i)] = static_cast<float>(std::pow(s.theta, -2.0 * i / d));
  const float eps = 1e-6f;

  const DeviceBuffer d_qkv = device_copy(qkv), d_bias = device_copy(bias), d_qn = device_copy(q_norm),
                     d_kn = device_copy(k_norm), d_freq = device_copy(inv_freq), d_pos = device_copy(positions),
                     d_slots = device_copy(slots);
  const size_t q_elems = static_cast<size_t>(tokens) * s.hq * d;
  GuardedBuffer d_q(q_elems * 2), d_k(pool_elems * 2), d_v(pool_elems * 2);

  ec::QkvEpilogueParams p;
  p.qkv = static_cast<const float*>(d_qkv.get());
  p.bias = s.bias ? static_cast<const float*>(d_bias.get()) : nullptr;
  p.q_norm = s.q_norm ? static_cast<const float*>(d_qn.get()) : nullptr;
  p.k_norm = s.k_norm ? static_cast<const float*>(d_kn.get()) : nullptr;
  p.inv_freq = static_cast<const float*>(d_freq.get());
  p.position_scale = s.position_scale;
  p.pairs = s.pairs;
  p.eps = eps;
  p.tokens = tokens;
  p.hq = s.hq;
  p.hkv = s.hkv;
  p.head_dim = d;
  p.positions = static_cast<const int32_t*>(d_pos.get());
  p.slots = static_cast<const int32_t*>(d_slots.get());
  p.q_out = as_bf16(d_q);
  p.k_pool = as_bf16(d_k);
  p.v_pool = as_bf16(d_v);
  p.page_size = s.page_size;
  p.page_stride = page_stride;
  p.token_stride = token_stride;
  ec::qkv_epilogue(p, nullptr);
  KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
  if (std::string g = check_all_guards({{&d_q, "q_out"}, {&d_k, "k_pool"}, {&d_v, "v_pool"}}); !g.empty()) {
    return CaseResult::fail(g);
  }

  // Reference: per token and head, bias, then RMSNorm (q/k heads with a norm), then RoPE (q/k
  // heads); `magnitude` is the size of the fp32 terms that make each output.
  std::vector<double> q_ref(q_elems), q_mag(q_elems);
  std::vector<double> k_ref, k_mag, v_ref, v_mag;  // the written pool elements, in the order of `written`
  std::vector<size_t> written;                     // pool element index of each
  std::vector<double> head(static_cast<size_t>(d)), out(static_cast<size_t>(d)), mag(static_cast<size_t>(d));
  for (int t = 0; t < tokens; ++t) {
    const int64_t slot = slots[static_cast<size_t>(t)];
    const size_t cache_row = static_cast<size_t>(slot / s.page_size * page_stride + slot % s.page_size * token_stride);
    for (int h = 0; h < heads; ++h) {
      const bool is_q = h < s.hq, is_k = !is_q && h < s.hq + s.hkv;
      for (int i = 0; i < d; ++i) {
        head[static_cast<size_t>(i)] = static_cast<double>(qkv[static_cast<size_t>(t) * row_width + h * d + i]) +
                                       (s.bias ? static_cast<double>(bias[static_cast<size_t>(h) * d + i]) : 0.0);
      }
      const std::vector<float>* norm = is_q && s.q_norm ? &q_norm : is_k && s.k_norm ? &k_norm : nullptr;
      if (norm) {
        double squares = 0;
        for (double x : head) squares += x * x;
        const double inv = 1.0 / std::sqrt(squares / d + static_cast<double>(eps));
        for (int i = 0; i < d; ++i) head[static_cast<size_t>(i)] *= inv * (*norm)[static_cast<size_t>(i)];
      }
      for (int i = 0; i < d; ++i) {
        out[static_cast<size_t>(i)] = head[static_cast<size_t>(i)];
        mag[static_cast<size_t>(i)] = std::fabs(head[static_cast<size_t>(i)]);
      }
      if (is_q || is_k) {
        for (int i = 0; i < half; ++i) {
          const size_t a = s.pairs == ec::RopePairs::Adjacent ? 2 * i : i;
          const size_t b = s.pairs == ec::RopePairs::Adjacent ? 2 * i + 1 : i + half;
          const double angle = static_cast<double>(positions[static_cast<size_t>(t)]) / s.position_scale *
                               inv_freq[static_cast<size_t>(i)];
          const double c = std::cos(angle), sn = std::sin(angle);
          out[a] = head[a] * c - head[b] * sn;
          out[b] = head[a] * sn + head[b] * c;
          mag[a] = mag[b] = std::fabs(head[a]) + std::fabs(head[b]);
        }
      }
      for (int i = 0; i < d; ++i) {
        if (is_q) {
          const size_t e = (static_cast<size_t>(t) * s.hq + h) * d + i;
          q_ref[e] = out[static_cast<size_t>(i)];
          q_mag[e] = mag[static_cast<size_t>(i)];
        } else {
          const int g = is_k ? h - s.hq : h - s.hq - s.hkv;
          if (is_k) {
            written.push_back(cache_row + static_cast<size_t>(g) * d + i);
            k_ref.push_back(out[static_cast<size_t>(i)]);
            k_mag.push_back(mag[static_cast<size_t>(i)]);
          } else {
            v_ref.push_back(out[static_cast<size_t>(i)]);
            v_mag.push_back(mag[static_cast<size_t>(i)]);
          }
        }
      }
    }
  }
  // k and v heads of a token land at the same offsets of their pools, in the same order.
  // Tolerance: the device's fp32 bias add, norm (a sum of <= 128 squares, rsqrtf) and rotation
  // (cos/sin rounded to fp32, two products and a sum) stay below 2^-16 of the terms' size, then
  // bf16 rounding adds at most 2^-8 of the value: 2^-8 |ref| + 2^-15 magnitude.
  auto tolerance = [](const std::vector<double>& ref, const std::vector<double>& m) {
    return [&ref, &m](size_t i) { return kBf16HalfUlp * std::fabs(ref[i]) + m[i] / 32768.0; };
  };
  std::string diff = compare_within("q_out", download_bf16(d_q, q_elems), q_ref, tolerance(q_ref, q_mag));
  if (!diff.empty()) return CaseResult::fail(diff);
  const std::vector<uint16_t> k_bits = download_all<uint16_t>(d_k, pool_elems);
  const std::vector<uint16_t> v_bits = download_all<uint16_t>(d_v, pool_elems);
  std::vector<float> k_got, v_got;
  std::vector<char> is_written(pool_elems, 0);
  for (size_t e : written) {
    k_got.push_back(bf16_to_float(k_bits[e]));
    v_got.push_back(bf16_to_float(v_bits[e]));
    is_written[e] = 1;
  }
  diff = compare_within("k_pool slots", k_got, k_ref, tolerance(k_ref, k_mag));
  if (diff.empty()) diff = compare_within("v_pool slots", v_got, v_ref, tolerance(v_ref, v_mag));
  if (!diff.empty()) return CaseResult::fail(diff);
  // Every element no token owns (other slots, other pages, stride padding) keeps its poison.
  for (size_t e = 0; e < pool_elems; ++e) {
    if (is_written[e]) continue;
    if (k_bits[e] != 0xffff || v_bits[e] != 0xffff) {
      std::ostringstream os;
      os << (k_bits[e] != 0xffff ? "k_pool" : "v_pool") << " element " << e << " (page " << e / page_stride
         << ", offset " << e % page_stride << ") was written but belongs to no token of the step";
      return CaseResult::fail(os.str());
    }
  }
  return CaseResult::pass();
}

// ---------------------------------------------------------------------------------------------
// swiglu

struct SwigluSpec {
  int tokens = 1, ffn = 1;
  float amplitude = 1.f;
  uint64_t seed = 1;
};

CaseResult run_swiglu(const SwigluSpec& s) {
  std::mt19937_64 rng(s.seed);
  const std::vector<float> gate_up = normal_floats(static_cast<size_t>(s.tokens) * 2 * s.ffn, 0.f, s.amplitude, rng);
  const DeviceBuffer d_in = device_copy(gate_up);
  const size_t out_elems = static_cast<size_t>(s.tokens) * s.ffn;
  GuardedBuffer d_out(out_elems * 2);
  ec::swiglu(static_cast<const float*>(d_in.get()), s.tokens, s.ffn, as_bf16(d_out), nullptr);
  KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
  if (std::string g = check_all_guards({{&d_out, "out"}}); !g.empty()) return CaseResult::fail(g);
  std::vector<double> expected(out_elems);
  for (int t = 0; t < s.tokens; ++t) {
    for (int i = 0; i < s.ffn; ++i) {
      const double g = gate_up[static_cast<size_t>(t) * 2 * s.ffn + i];
      const double up = gate_up[static_cast<size_t>(t) * 2 * s.ffn + s.ffn + i];
      expected[static_cast<size_t>(t) * s.ffn + i] = g / (1.0 + std::exp(-g)) * up;
    }
  }
  // A product of fp32 factors (expf within 2 ulp): a few 2^-24 relative, then bf16 rounding's
  // 2^-8. 2^-8 + 2^-12 of |ref|; the absolute floor covers results below fp32's normal range.
  const std::string diff = compare_within("out", download_bf16(d_out, out_elems), expected, [&](size_t i) {
    return (kBf16HalfUlp + 1.0 / 4096) * std::fabs(expected[i]) + 1e-30;
  });
  return diff.empty() ? CaseResult::pass() : CaseResult::fail(diff);
}

// ---------------------------------------------------------------------------------------------
// gemv

struct GemvSpec {
  int in = 8, out = 1;
  uint64_t seed = 1;
};

CaseResult run_gemv(const GemvSpec& s) {
  std::mt19937_64 rng(s.seed);
  const StorageArray x = normal_bf16(static_cast<size_t>(s.in), 1.f, rng);
  const StorageArray w = normal_bf16(static_cast<size_t>(s.out) * s.in, 1.f, rng);
  const DeviceBuffer d_x = device_copy(x.bits), d_w = device_copy(w.bits);
  GuardedBuffer d_y(static_cast<size_t>(s.out) * sizeof(float));
  ec::gemv(as_bf16(d_x), s.in, as_bf16(d_w), s.out, static_cast<float*>(d_y.get()), nullptr);
  KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
  if (std::string g = check_all_guards({{&d_y, "y"}}); !g.empty()) return CaseResult::fail(g);
  std::vector<double> expected(static_cast<size_t>(s.out)), abs_sum(static_cast<size_t>(s.out));
  for (int o = 0; o < s.out; ++o) {
    double acc = 0, size = 0;
    for (int k = 0; k < s.in; ++k) {
      const double term = static_cast<double>(x.values[static_cast<size_t>(k)]) * w.values[static_cast<size_t>(o) * s.in + k];
      acc += term;
      size += std::fabs(term);
    }
    expected[static_cast<size_t>(o)] = acc;
    abs_sum[static_cast<size_t>(o)] = size;
  }
  // The products of two bf16 values are exact in fp32; each lane chains 8 * ceil(in / 256) <=
  // in/32 + 8 fmas and a warp sum adds 5 levels, so the fp32 sum is within (in/32 + 16) * 2^-24 *
  // sum |x w| (the standard bound of recursive summation). One dropped term of typical size,
  // sum |x w| / in, already exceeds it.
  const double chain = s.in / 32.0 + 16;
  const std::string diff = compare_within("y", download_all<float>(d_y, static_cast<size_t>(s.out)), expected,
                                          [&](size_t o) { return chain * kF32Unit * abs_sum[o] + 1e-30; });
  return diff.empty() ? CaseResult::pass() : CaseResult::fail(diff);
}

// ---------------------------------------------------------------------------------------------
// fill_normal

struct FillSpec {
  size_t count = 1;
  bool as_bf16 = false;
  float mean = 0.f, stddev = 1.f;
  uint64_t seed = 1;
};

// The documented generator: splitmix64's finaliser of seed * golden ratio + index, top 24 bits.
double host_uniform24(uint64_t seed, uint64_t index) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + index;
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return static_cast<double>(x >> 40) / 16777216.0;
}

CaseResult run_fill(const FillSpec& s) {
  GuardedBuffer d_data(s.count * (s.as_bf16 ? 2 : 4));
  ec::fill_normal(d_data.get(), s.as_bf16, s.count, s.mean, s.stddev, s.seed, nullptr);
  KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
  if (std::string g = check_all_guards({{&d_data, "data"}}); !g.empty()) return CaseResult::fail(g);
  const std::vector<float> got = s.as_bf16 ? download_bf16(d_data, s.count) : download_all<float>(d_data, s.count);
  std::vector<double> expected(s.count), radius(s.count);
  const double two_pi = 6.283185307179586;
  for (size_t i = 0; i < s.count; ++i) {
    // Box-Muller on the uniforms of counters 2i and 2i + 1; u1 in (0, 1].
    const double u1 = 1.0 - host_uniform24(s.seed, 2 * i), u2 = host_uniform24(s.seed, 2 * i + 1);
    radius[i] = std::sqrt(-2.0 * std::log(u1));
    expected[i] = s.mean + s.stddev * radius[i] * std::cos(two_pi * u2);
  }
  // The uniforms are exact in fp32. The device's fp32 2*pi and angle product shift the angle by
  // < 1.5e-6, cosf/logf/sqrtf add a few ulp: |error| < 2e-6 * stddev * radius plus the rounding of
  // the mean. 4e-6 * (|mean| + stddev * radius), plus 2^-8 |ref| for a bf16 result.
  const double rounding = s.as_bf16 ? kBf16HalfUlp : 0.0;
  const std::string diff = compare_within("data", got, expected, [&](size_t i) {
    return rounding * std::fabs(expected[i]) + 4e-6 * (std::fabs(s.mean) + s.stddev * radius[i]);
  });
  return diff.empty() ? CaseResult::pass() : CaseResult::fail(diff);
}

// ---------------------------------------------------------------------------------------------
// argument checks

// "" when `call` throws kascade::Error, else why not.
template <typename Call>
std::string expect_error(const char* what, Call call) {
  try {
    call();
  } catch (const kascade::Error&) {
    return "";
  }
  return std::string(what) + " was accepted";
}

CaseResult run_layer_errors() {
  // Buffers large enough that a call whose check were missing would still not fault.
  std::vector<uint16_t> zeros(64, 0);
  const DeviceBuffer d_x = device_copy(zeros), d_w = device_copy(zeros);
  GuardedBuffer d_y(64 * sizeof(float));
  std::string e = expect_error("gemv with an input width of 12 (not a multiple of 8)", [&] {
    ec::gemv(as_bf16(d_x), 12, as_bf16(d_w), 1, static_cast<float*>(d_y.get()), nullptr);
  });
  // tokens = 0: the checks come before the empty-step return.
  auto epilogue = [](int head_dim, int page_size) {
    ec::QkvEpilogueParams p;
    p.tokens = 0;
    p.hq = p.hkv = 1;
    p.head_dim = head_dim;
    p.page_size = page_size;
    ec::qkv_epilogue(p, nullptr);
  };
  if (e.empty()) e = expect_error("qkv_epilogue with head dim 130", [&] { epilogue(130, 16); });
  if (e.empty()) e = expect_error("qkv_epilogue with head dim 63", [&] { epilogue(63, 16); });
  if (e.empty()) e = expect_error("qkv_epilogue with page size 0", [&] { epilogue(64, 0); });
  KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
  return e.empty() ? CaseResult::pass() : CaseResult::fail(e);
}

// ---------------------------------------------------------------------------------------------
// registration

void make_embed_cases(CaseList& out) {
  const EmbedSpec specs[] = {{1, 1, 1, 1}, {5, 7, 3, 2}, {100, 64, 17, 3}, {1000, 576, 33, 4}, {37, 4097, 5, 5}, {49152, 64, 9, 6}};
  for (const EmbedSpec& s : specs) {
    std::ostringstream vars;
    vars << "vocab=" << s.vocab << ",dim=" << s.dim << ",tokens=" << s.tokens << ",seed=" << s.seed;
    out.push_back(std::make_unique<FnCase>("engine_embed_rows", vars.str(), [s] { return run_embed(s); }));
  }
}

void make_rms_cases(CaseList& out) {
  std::vector<RmsSpec> specs;
  uint64_t seed = 10;
  for (int width : {1, 7, 64, 255, 257, 576, 4096, 5003}) {
    for (bool delta : {true, false}) {
      for (bool ids : {false, true}) {
        RmsSpec s;
        s.width = width;
        s.delta = delta;
        s.row_ids = ids;
        s.stored_rows = ids ? 17 : (width > 1000 ? 3 : 5);
        s.rows = ids ? 6 : s.stored_rows;
        s.seed = seed++;
        specs.push_back(s);
      }
    }
  }
  // Mean squares near eps: a wrong or missing eps shows.
  for (float eps : {1e-5f, 1e-6f}) {
    RmsSpec s;
    s.width = 576;
    s.stored_rows = s.rows = 3;
    s.amplitude = 1e-3f;
    s.eps = eps;
    s.seed = seed++;
    specs.push_back(s);
  }
  for (const RmsSpec& s : specs) {
    std::ostringstream vars;
    vars << "width=" << s.width << ",rows=" << s.rows << "/" << s.stored_rows << ",delta=" << s.delta
         << ",row_ids=" << s.row_ids << ",amp=" << s.amplitude << ",eps=" << s.eps << ",seed=" << s.seed;
    out.push_back(std::make_unique<FnCase>("engine_add_rms_norm", vars.str(), [s] { return run_rms(s); }));
  }
}

void make_qkv_cases(CaseList& out) {
  std::vector<QkvSpec> specs;
  uint64_t seed = 100;
  for (int d : {64, 128}) {
    for (ec::RopePairs pairs : {ec::RopePairs::Adjacent, ec::RopePairs::Halves}) {
      for (int variant = 0; variant < 4; ++variant) {
        QkvSpec s;
        s.head_dim = d;
        s.pairs = pairs;
        s.bias = variant & 1;
        s.q_norm = s.k_norm = (variant & 2) != 0;
        s.position_scale = variant == 1 || variant == 2 ? 8.f : 1.f;
        if (d == 128) {
          s.hq = 32;
          s.hkv = 8;
          s.theta = 500000;
        }
        s.seed = seed++;
        specs.push_back(s);
      }
    }
  }
  QkvSpec s;
  s.q_norm = true;  // q's norm only: k must not be normalised
  s.seed = seed++;
  specs.push_back(s);
  s = QkvSpec{};
  s.k_norm = true;
  s.bias = true;
  s.seed = seed++;
  specs.push_back(s);
  s = QkvSpec{};  // small values: eps matters in the norms
  s.q_norm = s.k_norm = true;
  s.amplitude = 1e-3f;
  s.seed = seed++;
  specs.push_back(s);
  s = QkvSpec{};  // padded pool strides: the padding keeps its poison
  s.stride_pad = 8;
  s.pairs = ec::RopePairs::Halves;
  s.position_scale = 2.5f;
  s.seed = seed++;
  specs.push_back(s);
  s = QkvSpec{};  // one head each, other page sizes, one token
  s.hq = s.hkv = 1;
  s.page_size = 32;
  s.segments = {{31, 1}};
  s.seed = seed++;
  specs.push_back(s);
  s = QkvSpec{};
  s.hq = 14;
  s.hkv = 2;
  s.head_dim = 96;
  s.page_size = 8;
  s.bias = true;
  s.segments = {{5, 30}, {0, 16}, {65535, 3}};
  s.seed = seed++;
  specs.push_back(s);
  for (const QkvSpec& spec : specs) {
    out.push_back(std::make_unique<FnCase>("engine_qkv_epilogue", describe(spec), [spec] { return run_qkv(spec); }));
  }
}

void make_swiglu_cases(CaseList& out) {
  uint64_t seed = 200;
  for (int ffn : {1, 2, 33, 255, 1536, 1537, 14336}) {
    for (int tokens : {1, 4}) {
      for (float amplitude : {1.f, 8.f}) {
        const SwigluSpec s{tokens, ffn, amplitude, seed++};
        std::ostringstream vars;
        vars << "tokens=" << s.tokens << ",ffn=" << s.ffn << ",amp=" << s.amplitude << ",seed=" << s.seed;
        out.push_back(std::make_unique<FnCase>("engine_swiglu", vars.str(), [s] { return run_swiglu(s); }));
      }
    }
  }
}

void make_gemv_cases(CaseList& out) {
  std::vector<GemvSpec> specs;
  uint64_t seed = 300;
  for (int in : {8, 16, 64, 200, 256, 264, 576, 1536, 4096, 14336}) {
    for (int o : {1, 9, 130}) specs.push_back({in, o, seed++});
  }
  specs.push_back({576, 49153, seed++});  // an odd vocabulary
  specs.push_back({4096, 1024, seed++});
  specs.push_back({8, 7, seed++});
  for (const GemvSpec& s : specs) {
    std::ostringstream vars;
    vars << "in=" << s.in << ",out=" << s.out << ",seed=" << s.seed;
    out.push_back(std::make_unique<FnCase>("engine_gemv", vars.str(), [s] { return run_gemv(s); }));
  }
}

void make_fill_cases(CaseList& out) {
  std::vector<FillSpec> specs;
  uint64_t seed = 7;
  for (size_t count : {size_t{1}, size_t{1000}, size_t{(1u << 20) + 3}}) {
    for (bool bf16 : {false, true}) {
      specs.push_back({count, bf16, 0.f, 1.f, seed++});
      specs.push_back({count, bf16, 1.f, 0.1f, seed++});
    }
  }
  for (const FillSpec& s : specs) {
    std::ostringstream vars;
    vars << "count=" << s.count << "," << (s.as_bf16 ? "bf16" : "f32") << ",mean=" << s.mean << ",stddev=" << s.stddev
         << ",seed=" << s.seed;
    out.push_back(std::make_unique<FnCase>("engine_fill_normal", vars.str(), [s] { return run_fill(s); }));
  }
}

CaseRegistrar embed_registrar("engine_embed_rows", make_embed_cases);
CaseRegistrar rms_registrar("engine_add_rms_norm", make_rms_cases);
CaseRegistrar qkv_registrar("engine_qkv_epilogue", make_qkv_cases);
CaseRegistrar swiglu_registrar("engine_swiglu", make_swiglu_cases);
CaseRegistrar gemv_registrar("engine_gemv", make_gemv_cases);
CaseRegistrar fill_registrar("engine_fill_normal", make_fill_cases);
CaseRegistrar layer_errors_registrar("engine_layer_errors", [](CaseList& out) {
  out.push_back(std::make_unique<FnCase>("engine_layer_errors", "gemv_in=12,epilogue_D=130/63,page=0",
                                         [] { return run_layer_errors(); }));
});

}  // namespace
}  // namespace kascade::gpu_test
