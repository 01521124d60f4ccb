// src/cli/command.h — how a subcommand of the `kascade` tool registers itself.
//
// Each subcommand lives in its own file and registers with a static Command object:
//   static kascade::cli::Command reg("plan", "show or check a plan file", run_plan);
// run_plan(args) receives the arguments after the subcommand name, returns the exit code
// and may throw kascade::Error, which main() prints as one line with exit code 1.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "kascade/tensor.h"

namespace kascade::cli {

using Args = std::vector<std::string>;
using Handler = std::function<int(const Args&)>;

struct Command {
  Command(const char* name, const char* summary, Handler handler);
};

// Small helpers shared by subcommands for option parsing with strict errors.
// Splits "--key=value" / "--key value"; unknown options are the caller's to reject.
struct OptionReader {
  explicit OptionReader(const Args& args) : args_(args) {}
  bool done() const { return pos_ >= args_.size(); }
  const std::string& peek() const { return args_[pos_]; }
  std::string next(const char* what);             // the next token (throws if none)
  bool take_flag(const char* name);               // consumes `name` if it is next
  bool take_value(const char* name, std::string& out);  // consumes "name v" or "name=v"
 private:
  const Args& args_;
  size_t pos_ = 0;
};

int parse_int(const std::string& s, const char* what);
// --kv-cache f32|f16|fp8, shared by the commands that run the engine: the CPU backend's KV-cache
// storage (engine::BackendOptions::cpu_kv_cache; f16 when not given). Consumes the option when
// it is next and parses it into `out`; any other value throws naming the choices. `option` names
// another option of the same values (perplexity's --reference-kv-cache).
constexpr const char* kKvCacheUsage =
    "  --kv-cache: the CPU backend's KV cache, f16 (default: half the memory), f32, or fp8 (e4m3\n"
    "            with per layer and kv head scales: a quarter); attention accumulates in fp32\n"
    "            (the cuda backend's cache is bf16)\n";
bool take_kv_cache(OptionReader& r, std::optional<DType>& out, const char* option = "--kv-cache");
// Throws unless a given --kv-cache applies to backend `kind` (the cpu backend's option).
void check_kv_cache_backend(const std::optional<DType>& kv_cache, const std::string& kind);
// Provenance of written results (provenance.cpp): the commit (KASCADE_COMMIT when set, as on a
// GPU machine's copy of the tree without its git directory, else the checkout's HEAD, else
// "unknown") and the current UTC time as ISO 8601.
std::string git_commit();
std::string utc_now();
double parse_double(const std::string& s, const char* what);
// The items of a comma-separated option value ("a,b,c"); an empty list or item throws naming `what`.
std::vector<std::string> split_list(const std::string& s, const char* what);

}  // namespace kascade::cli
