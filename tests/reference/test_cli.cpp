// `kascade reference` end to end without Python: case directories written with the project's
// own npy writer, the binary run as a subprocess, results checked against hand-computed values
// (the prefill case of test_hand_cases.cpp) and error paths checked for one line and no output.
// tests/python/compare_reference.py covers the same command far more broadly when numpy exists.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kascade/npy.h"

namespace kascade {
namespace {

namespace fs = std::filesystem;

const std::string kKascade = std::string(KASCADE_BINARY_DIR) + "/bin/kascade";

struct CommandResult {
  int exit_code;
  std::string stdout_text, stderr_text;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

class ReferenceCli : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kKascade)) << kKascade << " is missing: build the kascade target before test_reference";
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / (std::string("kascade-ref-cli-") + info->name() + "-" +
                                        std::to_string(static_cast<long>(::getpid())));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "case");
    // Prefill, D = 1, Hq = Hkv = 1, T = 2, n = 5, q = 1, k = scores [0, 3, 1, 0, 2], v = 1..5.
    const float q[] = {1, 1, 1, 1, 1}, k[] = {0, 3, 1, 0, 2}, v[] = {1, 2, 3, 4, 5};
    write_npy((dir_ / "case/q.npy").string(), DType::F32, {1, 5, 1}, q);
    write_npy((dir_ / "case/k.npy").string(), DType::F32, {1, 5, 1}, k);
    write_npy((dir_ / "case/v.npy").string(), DType::F32, {1, 5, 1}, v);
    write_case(R"({"mode": "prefill", "role": "anchor", "k_min": 1, "tile": 2, "scale": 1.0})");
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write_case(const std::string& json) { std::ofstream(dir_ / "case/case.json") << json; }

  CommandResult run(const fs::path& out_dir) {
    const fs::path out_file = dir_ / "stdout.txt", err_file = dir_ / "stderr.txt";
    const std::string cmd = "'" + kKascade + "' reference '" + (dir_ / "case").string() + "' '" + out_dir.string() +
                            "' > '" + out_file.string() + "' 2> '" + err_file.string() + "'";
    const int status = std::system(cmd.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out_file), slurp(err_file)};
  }

  // A failing run: non-zero exit, one stderr line containing `names`, nothing written.
  void expect_rejected(const std::string& names) {
    const fs::path out_dir = dir_ / "out-rejected";
    const CommandResult r = run(out_dir);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_EQ(r.stdout_text, "");
    EXPECT_EQ(std::count(r.stderr_text.begin(), r.stderr_text.end(), '\n'), 1) << r.stderr_text;
    EXPECT_NE(r.stderr_text.find(names), std::string::npos) << r.stderr_text;
    EXPECT_FALSE(fs::exists(out_dir));
  }

  fs::path dir_;
};

double weighted(std::initializer_list<std::pair<double, double>> score_value) {
  double num = 0, den = 0;
  for (auto [s, v] : score_value) {
    num += std::exp(s) * v;
    den += std::exp(s);
  }
  return num / den;
}

TEST_F(ReferenceCli, AnchorPrefillWritesHandComputedOutputAndSelection) {
  const CommandResult r = run(dir_ / "out");
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  EXPECT_EQ(r.stderr_text, "");
  const NpyArray out = read_npy((dir_ / "out/out.npy").string());
  ASSERT_EQ(out.dtype, DType::F32);
  ASSERT_EQ(out.shape, (std::vector<int64_t>{1, 5, 1}));
  const double expected[] = {1.0, weighted({{0, 1}, {3, 2}}), weighted({{3, 2}, {1, 3}}),
                             weighted({{3, 2}, {1, 3}, {0, 4}}), weighted({{3, 2}, {2, 5}})};
  for (int t = 0; t < 5; ++t) EXPECT_NEAR(out.data<float>()[t], expected[t], 1e-6 * expected[t]) << "t=" << t;
  const NpyArray sel = read_npy((dir_ / "out/select.npy").string());
  ASSERT_EQ(sel.dtype, DType::I32);
  ASSERT_EQ(sel.shape, (std::vector<int64_t>{1, 3, 1}));
  EXPECT_EQ(std::vector<int32_t>(sel.data<int32_t>(), sel.data<int32_t>() + 3), (std::vector<int32_t>{-1, 1, 1}));
  std::vector<std::string> files;  // exactly the two outputs, no temporaries left behind
  for (const auto& entry : fs::directory_iterator(dir_ / "out")) files.push_back(entry.path().filename().string());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"out.npy", "select.npy"}));
}

TEST_F(ReferenceCli, ReuseReadsTheSelectionAndWritesOnlyOut) {
  // Reuse key {3} for the tile b = 4: the query t = 4 attends to {3} + diagonal {4}.
  const int32_t selection[] = {-1, 0, 3};
  write_npy((dir_ / "case/select.npy").string(), DType::I32, {1, 3, 1}, selection);
  write_case(R"({"mode": "prefill", "role": "reuse", "k_min": 1, "tile": 2, "scale": 1.0, "head_map": [0]})");
  const CommandResult r = run(dir_ / "out");
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  const NpyArray out = read_npy((dir_ / "out/out.npy").string());
  EXPECT_NEAR(out.data<float>()[4], weighted({{0, 4}, {2, 5}}), 1e-6);
  EXPECT_NEAR(out.data<float>()[2], weighted({{0, 1}, {1, 3}}), 1e-6);
  EXPECT_FALSE(fs::exists(dir_ / "out/select.npy"));
}

TEST_F(ReferenceCli, RejectsBadCasesWithOneLineAndNoOutput) {
  write_case(R"({"mode": "prefill", "role": "anchor", "tile": 2, "topk": 3})");
  expect_rejected("case.json: unknown key 'topk'");
  write_case(R"({"mode": "prefill", "role": "anchor", "p0": 2})");
  expect_rejected("case.json: 'p0' = 2");
  write_case(R"({"mode": "decode", "role": "anchor"})");
  expect_rejected("q.npy: decode takes one query");
  write_case(R"({"mode": "prefill", "role": "reuse", "tile": 2, "k_min": 1})");
  expect_rejected("select.npy: missing");
  const int32_t out_of_range[] = {-1, 2, 3};  // key 2 is not a candidate of tile b = 2
  write_npy((dir_ / "case/select.npy").string(), DType::I32, {1, 3, 1}, out_of_range);
  expect_rejected("select.npy: selection [0, 1, 0] = 2 is not a candidate key");
  write_case(R"({"mode": "prefill", "role": "anchor"})");
  expect_rejected("select.npy: given for role anchor");
  fs::remove(dir_ / "case/select.npy");
  write_npy((dir_ / "case/q.npy").string(), DType::F32, {1, 5, 1}, std::vector<float>(5, NAN).data());
  expect_rejected("q.npy: element 0 is nan");
  std::ofstream(dir_ / "case/q.npy") << "not an npy file";
  expect_rejected("q.npy");
}

}  // namespace
}  // namespace kascade
