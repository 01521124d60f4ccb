// src/engine/cpu_kernels.h — the CPU backend's building blocks: a small persistent thread pool
// and fp32 kernels (blocked matmul against row-major weights, RMSNorm, RoPE, SwiGLU, softmax).
// Internal to the engine library.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "kascade/engine/model.h"

namespace kascade::engine::cpu {

// Persistent workers: a forward pass issues hundreds of parallel loops per token, too many to
// pay a thread start for each, or a sleeping thread's wake-up (tens of microseconds, about
// half of a decode step's time at 2 threads): between loops the workers spin for up to
// kSpinMicroseconds, then sleep; the caller spins the same way for the workers to finish.
class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads >= 1 (the caller counts as one)
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // Runs fn(i) for every i in [0, n) on the workers and the caller; rethrows the first exception.
  void parallel_for(int n, const std::function<void(int)>& fn);

 private:
  void worker_loop();
  void run_tasks();

  static constexpr int kSpinMicroseconds = 200;

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* job_ = nullptr;
  int job_size_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> busy_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> next_{0};
  std::exception_ptr error_;
};

// y[t][o] = sum_i x[t][i] * w[o][i] (+ bias[o]) for t < tokens, o < out: a Linear layer with
// PyTorch's weight layout [out][in]. Rows of w are split across the pool.
void matmul(ThreadPool& pool, const float* x, int tokens, int in, const float* w, int out, float* y,
            const float* bias = nullptr);

// Rows [r0, r1) of that product, on the calling thread (w holds at least r1 rows). The
// quantized products (cpu/quantized.h) run it on tiles of dequantized rows.
void matmul_row_range(const float* x, int tokens, int in, const float* w, int out, float* y, int r0, int r1);

// y = x / sqrt(mean(x^2) + eps) * weight over each row of `width` values (in place allowed).
void rms_norm(const float* x, const float* weight, int rows, int width, float eps, float* y);

// Rotates each head of `x` ([tokens][heads * head_dim]) for positions first_pos.. first_pos+tokens-1.
void apply_rope(const ModelConfig& c, float* x, int tokens, int heads, int first_pos);

// Softmax attention of one query over keys/values [n_keys][d] (rows contiguous): out [d].
// `scores` is scratch of n_keys floats. Scores and the max-subtracted softmax are fp32.
void attend_one_query(const float* q, const float* keys, const float* values, int n_keys, int d, float scale,
                      float* scores, float* out);

// out[i] = silu(gate[i]) * up[i].
void swiglu(const float* gate, const float* up, int64_t n, float* out);

}  // namespace kascade::engine::cpu
