// CPU kernels of the engine (see cpu_kernels.h).
#include "cpu_kernels.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

namespace kascade::engine::cpu {

// ---- thread pool ------------------------------------------------------------------------------
ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < std::max(1, threads); ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

namespace {
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins until done() or about `microseconds` pass; true when done() became true.
template <typename Done>
bool spin_until(Done done, int microseconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(microseconds);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() > deadline) return done();
  }
}
}  // namespace

void ThreadPool::run_tasks() {
  for (;;) {
    const int i = next_.fetch_add(1);
    if (i >= job_size_) return;
    try {
      (*job_)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    auto ready = [&] { return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen; };
    if (!spin_until(ready, kSpinMicroseconds)) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, ready);
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = generation_.load(std::memory_order_acquire);
    run_tasks();
    if (busy_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // Under the mutex: the caller checks busy_ under it before sleeping, so no wake-up is lost.
      std::lock_guard<std::mutex> lock(mutex_);
      done_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int n, const std::function<void(int)>& fn) {
  if (n <= 0) return;
  if (workers_.empty() || n == 1) {
    for (int i = 0; i < n; ++i) fn(i);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    job_size_ = n;
    next_.store(0);
    error_ = nullptr;
    busy_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);  // spinning workers start here
  }
  wake_.notify_all();
  run_tasks();
  auto finished = [&] { return busy_.load(std::memory_order_acquire) == 0; };
  std::unique_lock<std::mutex> lock(mutex_, std::defer_lock);
  if (!spin_until(finished, kSpinMicroseconds)) {
    lock.lock();
    done_.wait(lock, finished);
  } else {
    lock.lock();  // error_ is written under the mutex
  }
  job_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

// ---- matmul -----------------------------------------------------------------------------------
namespace {

// Eight fp32 lanes: one AVX register, or two SSE registers on the baseline target. The helpers
// below are inlined file-local functions, so the -Wpsabi note about passing 32-byte vectors
// without AVX concerns no real ABI boundary.
#if defined(__GNUC__)  // GCC and clang
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef float v8 __attribute__((vector_size(32)));

inline v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline float sum8(const v8& v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// Built twice on x86-64 GCC, for AVX2+FMA and for the baseline, chosen at load time: the build
// stays portable while the machines we run on get 256-bit FMA.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// x86-64-v3 (AVX2, FMA, F16C...), not arch=haswell: GCC dispatches an arch=CPU clone on the
// CPU model, so AMD processors with the same instructions ran the baseline clone.
#define KASCADE_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KASCADE_SIMD_CLONES
#endif

// Rows [r0, r1) of y. Blocks of 4 weight rows x 2 tokens share their loads (8 accumulators);
// a 4-row block of weights (4 * in floats) stays in L1 while the tokens stream past it.
KASCADE_SIMD_CLONES
void matmul_rows(const float* x, int tokens, int in, const float* w, int out, float* y, int r0, int r1) {
  const int in8 = in / 8 * 8;
  int r = r0;
  for (; r + 4 <= r1; r += 4) {
    const float* w0 = w + static_cast<int64_t>(r) * in;
    const float* w1 = w0 + in;
    const float* w2 = w1 + in;
    const float* w3 = w2 + in;
    int t = 0;
    for (; t + 2 <= tokens; t += 2) {
      const float* xa = x + static_cast<int64_t>(t) * in;
      const float* xb = xa + in;
      v8 a0 = {}, a1 = {}, a2 = {}, a3 = {}, b0 = {}, b1 = {}, b2 = {}, b3 = {};
      for (int i = 0; i < in8; i += 8) {
        const v8 va = load8(xa + i), vb = load8(xb + i);
        const v8 q0 = load8(w0 + i), q1 = load8(w1 + i), q2 = load8(w2 + i), q3 = load8(w3 + i);
        a0 += va * q0; a1 += va * q1; a2 += va * q2; a3 += va * q3;
        b0 += vb * q0; b1 += vb * q1; b2 += vb * q2; b3 += vb * q3;
      }
      float sa[4] = {sum8(a0), sum8(a1), sum8(a2), sum8(a3)};
      float sb[4] = {sum8(b0), sum8(b1), sum8(b2), sum8(b3)};
      for (int i = in8; i < in; ++i) {
        sa[0] += xa[i] * w0[i]; sa[1] += xa[i] * w1[i]; sa[2] += xa[i] * w2[i]; sa[3] += xa[i] * w3[i];
        sb[0] += xb[i] * w0[i]; sb[1] += xb[i] * w1[i]; sb[2] += xb[i] * w2[i]; sb[3] += xb[i] * w3[i];
      }
      float* ya = y + static_cast<int64_t>(t) * out + r;
      float* yb = ya + out;
      for (int k = 0; k < 4; ++k) {
        ya[k] = sa[k];
        yb[k] = sb[k];
      }
    }
    for (; t < tokens; ++t) {
      const float* xa = x + static_cast<int64_t>(t) * in;
      v8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
      for (int i = 0; i < in8; i += 8) {
        const v8 va = load8(xa + i);
        a0 += va * load8(w0 + i); a1 += va * load8(w1 + i); a2 += va * load8(w2 + i); a3 += va * load8(w3 + i);
      }
      float sa[4] = {sum8(a0), sum8(a1), sum8(a2), sum8(a3)};
      for (int i = in8; i < in; ++i) {
        sa[0] += xa[i] * w0[i]; sa[1] += xa[i] * w1[i]; sa[2] += xa[i] * w2[i]; sa[3] += xa[i] * w3[i];
      }
      float* ya = y + static_cast<int64_t>(t) * out + r;
      for (int k = 0; k < 4; ++k) ya[k] = sa[k];
    }
  }
  for (; r < r1; ++r) {
    const float* wr = w + static_cast<int64_t>(r) * in;
    for (int t = 0; t < tokens; ++t) {
      const float* xa = x + static_cast<int64_t>(t) * in;
      v8 a = {};
      for (int i = 0; i < in8; i += 8) a += load8(xa + i) * load8(wr + i);
      float s = sum8(a);
      for (int i = in8; i < in; ++i) s += xa[i] * wr[i];
      y[static_cast<int64_t>(t) * out + r] = s;
    }
  }
}

}  // namespace

KASCADE_SIMD_CLONES
void attend_one_query(const float* q, const float* keys, const float* values, int n_keys, int d, float scale,
                      float* scores, float* out) {
  const int d8 = d / 8 * 8;
  float max_s = -INFINITY;
  for (int j = 0; j < n_keys; ++j) {
    const float* k = keys + static_cast<int64_t>(j) * d;
    v8 acc = {};
    for (int i = 0; i < d8; i += 8) acc += load8(q + i) * load8(k + i);
    float s = sum8(acc);
    for (int i = d8; i < d; ++i) s += q[i] * k[i];
    s *= scale;
    scores[j] = s;
    max_s = std::max(max_s, s);
  }
  float sum = 0;
  for (int i = 0; i < d; ++i) out[i] = 0;
  for (int j = 0; j < n_keys; ++j) {
    const float p = std::exp(scores[j] - max_s);
    sum += p;
    const float* v = values + static_cast<int64_t>(j) * d;
    for (int i = 0; i < d; ++i) out[i] += p * v[i];
  }
  const float inv = 1.0f / sum;
  for (int i = 0; i < d; ++i) out[i] *= inv;
}

void matmul_row_range(const float* x, int tokens, int in, const float* w, int out, float* y, int r0, int r1) {
  matmul_rows(x, tokens, in, w, out, y, r0, r1);
}

void matmul(ThreadPool& pool, const float* x, int tokens, int in, const float* w, int out, float* y,
            const float* bias) {
  // Enough tasks to balance the pool, each a whole number of 4-row blocks.
  constexpr int kRowsPerBlock = 4;
  const int blocks = (out + kRowsPerBlock - 1) / kRowsPerBlock;
  const int tasks = std::min(blocks, pool.size() * 4);
  pool.parallel_for(tasks, [&](int task) {
    const int b0 = static_cast<int>(static_cast<int64_t>(blocks) * task / tasks);
    const int b1 = static_cast<int>(static_cast<int64_t>(blocks) * (task + 1) / tasks);
    matmul_rows(x, tokens, in, w, out, y, b0 * kRowsPerBlock, std::min(out, b1 * kRowsPerBlock));
  });
  if (bias) {
    for (int t = 0; t < tokens; ++t) {
      float* yt = y + static_cast<int64_t>(t) * out;
      for (int o = 0; o < out; ++o) yt[o] += bias[o];
    }
  }
}

// ---- elementwise ------------------------------------------------------------------------------
void rms_norm(const float* x, const float* weight, int rows, int width, float eps, float* y) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<int64_t>(r) * width;
    float* yr = y + static_cast<int64_t>(r) * width;
    double sum = 0;
    for (int i = 0; i < width; ++i) sum += static_cast<double>(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(sum / width + eps));
    for (int i = 0; i < width; ++i) yr[i] = xr[i] * inv * weight[i];
  }
}

void apply_rope(const ModelConfig& c, float* x, int tokens, int heads, int first_pos) {
  const int half = c.head_dim / 2;
  // Frequencies in fp32 as the reference implementations compute them; angles in fp64.
  const std::vector<float> inv_freq = rope_inverse_frequencies(c);
  std::vector<float> cos_t(static_cast<size_t>(half)), sin_t(static_cast<size_t>(half));
  for (int t = 0; t < tokens; ++t) {
    const double pos = static_cast<double>(first_pos + t) / c.rope_position_scale;
    for (int i = 0; i < half; ++i) {
      const double angle = pos * inv_freq[static_cast<size_t>(i)];
      cos_t[static_cast<size_t>(i)] = static_cast<float>(std::cos(angle));
      sin_t[static_cast<size_t>(i)] = static_cast<float>(std::sin(angle));
    }
    for (int h = 0; h < heads; ++h) {
      float* v = x + (static_cast<int64_t>(t) * heads + h) * c.head_dim;
      for (int i = 0; i < half; ++i) {
        // Adjacent: pair (2i, 2i+1); Halves: pair (i, i + D/2).
        const int a = c.rope_style == RopeStyle::Adjacent ? 2 * i : i;
        const int b = c.rope_style == RopeStyle::Adjacent ? 2 * i + 1 : i + half;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * cos_t[static_cast<size_t>(i)] - x1 * sin_t[static_cast<size_t>(i)];
        v[b] = x0 * sin_t[static_cast<size_t>(i)] + x1 * cos_t[static_cast<size_t>(i)];
      }
    }
  }
}

void swiglu(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace kascade::engine::cpu
