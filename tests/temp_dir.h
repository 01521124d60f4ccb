// tests/temp_dir.h — a scratch directory per test, removed when the test ends.
//
//   kascade::testing::TempDir dir("npy");
//   write_npy(dir.file("q.npy"), ...);
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <iterator>
#include <string>

namespace kascade::testing {

class TempDir {
 public:
  // <tmp>/kascade_<prefix>_<test name>_<pid>: unique per test and per process.
  explicit TempDir(const std::string& prefix) {
    path_ = std::filesystem::temp_directory_path() /
            ("kascade_" + prefix + "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name() + "_" +
             std::to_string(static_cast<long>(::getpid())));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }
  size_t entries() const {
    return static_cast<size_t>(
        std::distance(std::filesystem::directory_iterator(path_), std::filesystem::directory_iterator()));
  }

 private:
  std::filesystem::path path_;
};

}  // namespace kascade::testing
