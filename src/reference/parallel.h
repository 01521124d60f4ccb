// src/reference/parallel.h — run independent per-head tasks of the oracle on std::threads.
//
// parallel_for(count, fn) calls fn(i) once for every i in [0, count), spreading the indices
// over at most hardware_concurrency() threads. Tasks must write disjoint outputs; each task is
// sequential inside, so results do not depend on the thread count. The first exception thrown
// by any task is rethrown in the caller after all threads have joined.
#pragma once

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace kascade::ref::detail {

template <typename Fn>
void parallel_for(int count, Fn&& fn) {
  if (count <= 0) return;
  const unsigned hardware = std::max(1u, std::thread::hardware_concurrency());
  const int num_threads = static_cast<int>(std::min<unsigned>(hardware, static_cast<unsigned>(count)));
  if (num_threads == 1) {
    for (int i = 0; i < count; ++i) fn(i);
    return;
  }
  std::atomic<int> next{0};
  std::exception_ptr first_error;
  std::mutex error_mutex;
  auto worker = [&]() {
    for (int i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!first_error) first_error = std::current_exception();
      }
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(num_threads - 1);
  for (int t = 1; t < num_threads; ++t) threads.emplace_back(worker);
  worker();
  for (auto& th : threads) th.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace kascade::ref::detail
