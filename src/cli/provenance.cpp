// Provenance of the files the subcommands write (command.h): the commit and the time.
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

#include "command.h"

namespace kascade::cli {

std::string git_commit() {
  if (const char* env = std::getenv("KASCADE_COMMIT"); env != nullptr && *env != '\0') return env;
  std::FILE* p = popen("git rev-parse --short=12 HEAD 2>/dev/null", "r");
  if (!p) return "unknown";
  char buf[64] = {0};
  const bool ok = std::fgets(buf, sizeof buf, p) != nullptr;
  pclose(p);
  std::string s = ok ? buf : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s.empty() ? "unknown" : s;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace kascade::cli
