// kascade — command-line entry point. Subcommands register themselves (see command.h).
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <sstream>
#include <string>

#include "command.h"
#include "kascade/error.h"

namespace kascade::cli {
namespace {
struct Entry {
  std::string summary;
  Handler handler;
};
std::map<std::string, Entry>& registry() {
  static std::map<std::string, Entry> r;
  return r;
}
}  // namespace

Command::Command(const char* name, const char* summary, Handler handler) {
  registry()[name] = Entry{summary, std::move(handler)};
}

std::string OptionReader::next(const char* what) {
  KASCADE_CHECK(pos_ < args_.size(), "missing " << what);
  return args_[pos_++];
}

bool OptionReader::take_flag(const char* name) {
  if (pos_ < args_.size() && args_[pos_] == name) {
    ++pos_;
    return true;
  }
  return false;
}

bool OptionReader::take_value(const char* name, std::string& out) {
  if (pos_ >= args_.size()) return false;
  const std::string& a = args_[pos_];
  const std::string n(name);
  if (a == n) {
    KASCADE_CHECK(pos_ + 1 < args_.size(), "option " << n << " needs a value");
    out = args_[pos_ + 1];
    pos_ += 2;
    return true;
  }
  if (a.size() > n.size() && a.compare(0, n.size(), n) == 0 && a[n.size()] == '=') {
    out = a.substr(n.size() + 1);
    ++pos_;
    return true;
  }
  return false;
}

int parse_int(const std::string& s, const char* what) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s.c_str(), &end, 10);
  KASCADE_CHECK(!s.empty() && end && *end == '\0' && errno == 0 && v >= -2147483647L && v <= 2147483647L,
                what << ": expected an integer, got '" << s << "'");
  return static_cast<int>(v);
}

bool take_kv_cache(OptionReader& r, std::optional<DType>& out, const char* option) {
  std::string v;
  if (!r.take_value(option, v)) return false;
  KASCADE_CHECK(v == "f32" || v == "f16" || v == "fp8", option << " must be f32, f16 or fp8, got '" << v << "'");
  out = v == "f32" ? DType::F32 : v == "fp8" ? DType::F8E4M3 : DType::F16;
  return true;
}

void check_kv_cache_backend(const std::optional<DType>& kv_cache, const std::string& kind) {
  KASCADE_CHECK(!kv_cache || kind == "cpu", "--kv-cache applies to the cpu backend; backend '"
                                                << kind << "' keeps its own KV cache (cuda: bf16)");
}

double parse_double(const std::string& s, const char* what) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  KASCADE_CHECK(!s.empty() && end && *end == '\0' && errno == 0, what << ": expected a number, got '" << s << "'");
  return v;
}

std::vector<std::string> split_list(const std::string& s, const char* what) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    KASCADE_CHECK(!item.empty(), what << ": empty item in '" << s << "'");
    out.push_back(item);
  }
  KASCADE_CHECK(!out.empty(), what << ": empty list");
  return out;
}

}  // namespace kascade::cli

static void usage(std::FILE* f) {
  std::fprintf(f, "usage: kascade <command> [args]\n\ncommands:\n");
  for (const auto& [name, e] : kascade::cli::registry()) std::fprintf(f, "  %-10s %s\n", name.c_str(), e.summary.c_str());
}

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  auto it = kascade::cli::registry().find(name);
  if (it == kascade::cli::registry().end()) {
    std::fprintf(stderr, "kascade: unknown command '%s' (try kascade --help)\n", name.c_str());
    return 2;
  }
  kascade::cli::Args args(argv + 2, argv + argc);
  try {
    return it->second.handler(args);
  } catch (const kascade::Error& e) {
    std::fprintf(stderr, "kascade %s: error: %s\n", name.c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kascade %s: internal error: %s\n", name.c_str(), e.what());
    return 1;
  }
}
