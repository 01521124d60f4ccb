// `kascade reference CASE_DIR OUT_DIR` — one attention call through the CPU oracle (SPEC 9).
//
// Reads CASE_DIR/case.json, q.npy, k.npy, v.npy (and select.npy for role reuse), validates
// all of it before computing anything, then writes OUT_DIR/out.npy (and select.npy for the
// dense and anchor roles). Files are first written under temporary names and renamed at the
// end, so bad input or a failed write leaves no output. Every error is one line naming the
// file and the problem (main() adds the "kascade reference: error:" prefix).
//
// Decisions where SPEC 9 leaves room (docs/reference.md repeats them):
// - `mode` and `role` are required; every other key has SPEC 9's default.
// - Integer keys (k_min, k_multiple, tile, p0, head_map entries) must be JSON integers;
//   rho must be in [0, 1]; scale must be a finite number. Duplicate keys are errors.
// - Prefill: p0 (default 0) must equal n - nq of the arrays. Decode: p0, if given, must be
//   n - 1 (the query's position). tile and budget are accepted in decode and do not matter.
// - head_map is accepted for role reuse only (checked, then ignored with pooling all).
// - select.npy is read for role reuse only; its presence with another role is an error.
// - Role reuse writes out.npy only.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "command.h"
#include "kascade/error.h"
#include "kascade/json.h"
#include "kascade/npy.h"
#include "kascade/reference.h"

namespace kascade::cli {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

struct CaseFile {
  ref::Call call;
  bool has_p0 = false;
  bool has_head_map = false;
};

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

int json_int(const Json& value, const std::string& file, const char* key, int min_value) {
  KASCADE_CHECK(value.is_number_integer(), file << ": '" << key << "' must be an integer, got " << one_line(value.dump()));
  const bool in_range = value.is_number_unsigned()
                            ? value.get<uint64_t>() <= 2147483647u && static_cast<int64_t>(value.get<uint64_t>()) >= min_value
                            : value.get<int64_t>() >= min_value && value.get<int64_t>() <= 2147483647;
  KASCADE_CHECK(in_range, file << ": '" << key << "' = " << one_line(value.dump()) << " is out of range (expected an integer >= "
                               << min_value << ")");
  return static_cast<int>(value.get<int64_t>());
}

std::string json_string(const Json& value, const std::string& file, const char* key) {
  KASCADE_CHECK(value.is_string(), file << ": '" << key << "' must be a string, got " << one_line(value.dump()));
  return value.get<std::string>();
}

// SPEC 9's case.json calls layer 0's role (dense output plus a selection) "dense"; the oracle
// computes it as Role::Layer0, and messages name it as the file does.
Role parse_case_role(const std::string& s) {
  if (s == "dense") return Role::Layer0;
  if (s == "anchor") return Role::Anchor;
  if (s == "reuse") return Role::Reuse;
  KASCADE_FAIL("unknown role '" << s << "' (expected dense, anchor or reuse)");
}
const char* case_role_name(Role r) { return r == Role::Layer0 ? "dense" : to_string(r); }

// Parses case.json strictly: an object with SPEC 9's keys only, each of the right type and value.
CaseFile parse_case_json(const fs::path& path) {
  const std::string file = path.string();
  const std::string text = read_text_file(file);
  const Json doc = parse_json_strict(text, file);
  KASCADE_CHECK(doc.is_object(), file << ": expected a JSON object, got " << doc.type_name());

  CaseFile c;
  ref::Call& call = c.call;
  SparsityParams& sp = call.params;
  bool has_mode = false, has_role = false;
  for (const auto& [key, value] : doc.items()) {
    try {
      if (key == "mode") {
        call.phase = parse_phase(json_string(value, file, "mode"));
        has_mode = true;
      } else if (key == "role") {
        call.role = parse_case_role(json_string(value, file, "role"));
        has_role = true;
      } else if (key == "rho") {
        KASCADE_CHECK(value.is_number(), file << ": 'rho' must be a number, got " << one_line(value.dump()));
        sp.rho = value.get<double>();
        KASCADE_CHECK(sp.rho >= 0.0 && sp.rho <= 1.0, file << ": 'rho' = " << sp.rho << " is not in [0, 1]");
      } else if (key == "k_min") {
        sp.k_min = json_int(value, file, "k_min", 0);
      } else if (key == "k_multiple") {
        sp.k_multiple = json_int(value, file, "k_multiple", 1);
      } else if (key == "tile") {
        sp.tile = json_int(value, file, "tile", 1);
      } else if (key == "budget") {
        sp.budget = parse_budget(json_string(value, file, "budget"));
      } else if (key == "p0") {
        call.p0 = json_int(value, file, "p0", 0);
        c.has_p0 = true;
      } else if (key == "pooling") {
        sp.pooling = parse_pooling(json_string(value, file, "pooling"));
      } else if (key == "head_map") {
        KASCADE_CHECK(value.is_array(), file << ": 'head_map' must be an array of kv head indices, got "
                                             << one_line(value.dump()));
        for (const Json& entry : value) call.head_map.push_back(json_int(entry, file, "head_map entry", 0));
        c.has_head_map = true;
      } else if (key == "scale") {
        KASCADE_CHECK(value.is_number(), file << ": 'scale' must be a number, got " << one_line(value.dump()));
        const double scale = value.get<double>();
        KASCADE_CHECK(std::isfinite(static_cast<float>(scale)), file << ": 'scale' = " << scale
                                                                     << " is not a finite float");
        sp.scale = static_cast<float>(scale);
      } else {
        KASCADE_FAIL(file << ": unknown key '" << key
                          << "' (known: mode, role, rho, k_min, k_multiple, tile, budget, p0, pooling, head_map, scale)");
      }
    } catch (const Error& e) {
      // parse_phase & co. do not know the file: add it once.
      const std::string msg = e.what();
      if (msg.rfind(file, 0) == 0) throw;
      KASCADE_FAIL(file << ": '" << key << "': " << msg);
    }
  }
  KASCADE_CHECK(has_mode, file << ": missing required key 'mode' (decode or prefill)");
  KASCADE_CHECK(has_role, file << ": missing required key 'role' (dense, anchor or reuse)");
  KASCADE_CHECK(!c.has_head_map || call.role == Role::Reuse,
                file << ": 'head_map' applies to role reuse only (role is " << case_role_name(call.role) << ")");
  return c;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

// Reads a float32 rank-3 array with positive extents that fit in int, all values finite.
NpyArray read_f32_rank3(const fs::path& path, const char* layout) {
  const std::string file = path.string();
  NpyArray a = read_npy(file);
  KASCADE_CHECK(a.dtype == DType::F32, file << ": dtype " << dtype_name(a.dtype) << ", expected float32 " << layout);
  KASCADE_CHECK(a.shape.size() == 3, file << ": rank " << a.shape.size() << " (shape " << shape_string(a.shape)
                                          << "), expected rank 3 " << layout);
  for (int64_t extent : a.shape) {
    KASCADE_CHECK(extent >= 1 && extent <= 2147483647,
                  file << ": shape " << shape_string(a.shape) << " has an empty or too large axis, expected " << layout);
  }
  const float* values = a.data<float>();
  for (int64_t i = 0; i < a.numel(); ++i) {
    KASCADE_CHECK(std::isfinite(values[i]), file << ": element " << i << " is " << values[i] << " (must be finite)");
  }
  return a;
}

// Reads the anchor's selection for role reuse: int32 [S, tiles, k_max], validated for this call.
ref::Selection read_selection(const fs::path& path, const ref::Call& call, int hkv, int nq, int n) {
  const std::string file = path.string();
  KASCADE_CHECK(fs::exists(path), file << ": missing (role reuse needs the anchor's selection)");
  NpyArray a = read_npy(file);
  KASCADE_CHECK(a.dtype == DType::I32, file << ": dtype " << dtype_name(a.dtype) << ", expected int32");
  KASCADE_CHECK(a.shape.size() == 3, file << ": rank " << a.shape.size() << " (shape " << shape_string(a.shape)
                                          << "), expected rank 3 [S, tiles, k_max]");
  const int sets = ref::num_selection_sets(call, hkv);
  const int tiles = ref::num_query_tiles(call, nq, n);
  KASCADE_CHECK(a.shape[0] == sets && a.shape[1] == tiles && a.shape[2] <= 2147483647,
                file << ": shape " << shape_string(a.shape) << ", expected [" << sets << ", " << tiles
                     << ", k_max] (S = " << (call.params.pooling == Pooling::All ? "1 with pooling all" : "Hkv")
                     << ", tiles of this " << to_string(call.phase) << " call)");
  ref::Selection sel = ref::Selection::empty(sets, tiles, static_cast<int>(a.shape[2]));
  const int32_t* values = a.data<int32_t>();
  std::copy(values, values + a.numel(), sel.index.begin());
  for (int s = 0; s < sets; ++s) {
    for (int tau = 0; tau < tiles; ++tau) {
      const int32_t* row = sel.row(s, tau);
      int valid = 0;
      while (valid < sel.k_max && row[valid] != -1) ++valid;
      sel.count[static_cast<size_t>(s) * tiles + tau] = valid;
    }
  }
  try {
    ref::validate_selection(call, sel, hkv, nq, n);
  } catch (const Error& e) {
    KASCADE_FAIL(file << ": " << e.what());
  }
  return sel;
}

// Writes every (name, bytes) pair into out_dir atomically as a group: all temporaries first,
// then the renames; on failure the temporaries (and a directory this call created) are removed.
void write_outputs(const fs::path& out_dir, const std::vector<std::pair<std::string, std::vector<uint8_t>>>& files) {
  std::error_code ec;
  const bool existed = fs::exists(out_dir, ec);
  KASCADE_CHECK(!existed || fs::is_directory(out_dir, ec), out_dir.string() << ": exists and is not a directory");
  // The outermost directory this call creates (OUT_DIR or one of its parents), removed on failure.
  fs::path created;
  if (!existed) {
    const fs::path absolute = fs::absolute(out_dir, ec);
    for (fs::path p = absolute; !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
      created = p;
      if (p == p.parent_path()) break;
    }
    fs::create_directories(out_dir, ec);
    KASCADE_CHECK(!ec, out_dir.string() << ": cannot create directory: " << ec.message());
  }
  std::vector<fs::path> temporaries;
  auto clean_up = [&]() {
    std::error_code ignored;
    for (const fs::path& t : temporaries) fs::remove(t, ignored);
    if (!created.empty()) fs::remove_all(created, ignored);
  };
  for (const auto& [name, bytes] : files) {
    const fs::path tmp = out_dir / ("." + name + ".tmp");
    temporaries.push_back(tmp);
    std::ofstream o(tmp, std::ios::binary | std::ios::trunc);
    o.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    o.close();
    if (!o) {
      clean_up();
      KASCADE_FAIL((out_dir / name).string() << ": cannot write");
    }
  }
  for (size_t i = 0; i < files.size(); ++i) {
    fs::rename(temporaries[i], out_dir / files[i].first, ec);
    if (ec) {
      clean_up();
      KASCADE_FAIL((out_dir / files[i].first).string() << ": cannot write: " << ec.message());
    }
  }
}

int run_reference(const Args& args) {
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::printf(
        "usage: kascade reference CASE_DIR OUT_DIR\n"
        "Runs one attention call of the CPU oracle (SPEC 9): reads CASE_DIR/{case.json,q.npy,k.npy,v.npy"
        "[,select.npy]}, writes OUT_DIR/out.npy and, for roles dense and anchor, OUT_DIR/select.npy.\n");
    return 0;
  }
  KASCADE_CHECK(args.size() == 2, "expected 2 arguments CASE_DIR OUT_DIR, got " << args.size()
                                                                                 << " (see kascade reference --help)");
  const fs::path case_dir = args[0];
  const fs::path out_dir = args[1];
  KASCADE_CHECK(fs::is_directory(case_dir), case_dir.string() << ": not a directory");

  CaseFile c = parse_case_json(case_dir / "case.json");
  ref::Call& call = c.call;
  const std::string q_file = (case_dir / "q.npy").string();
  const std::string k_file = (case_dir / "k.npy").string();
  const std::string v_file = (case_dir / "v.npy").string();
  const std::string case_file = (case_dir / "case.json").string();
  const NpyArray q = read_f32_rank3(q_file, "[Hq, nq, D]");
  const NpyArray k = read_f32_rank3(k_file, "[Hkv, n, D]");
  const NpyArray v = read_f32_rank3(v_file, "[Hkv, n, D]");
  const int hq = static_cast<int>(q.shape[0]);
  const int nq = static_cast<int>(q.shape[1]);
  const int d = static_cast<int>(q.shape[2]);
  const int hkv = static_cast<int>(k.shape[0]);
  const int n = static_cast<int>(k.shape[1]);
  KASCADE_CHECK(k.shape[2] == d, k_file << ": head dimension " << k.shape[2] << " differs from q.npy's D=" << d);
  KASCADE_CHECK(v.shape == k.shape, v_file << ": shape " << shape_string(v.shape) << " differs from k.npy's "
                                           << shape_string(k.shape));
  KASCADE_CHECK(hq % hkv == 0, q_file << ": Hq=" << hq << " is not a multiple of k.npy's Hkv=" << hkv);
  if (call.phase == Phase::Decode) {
    KASCADE_CHECK(nq == 1, q_file << ": decode takes one query (shape [Hq, 1, D]), got nq=" << nq);
    KASCADE_CHECK(!c.has_p0 || call.p0 == n - 1, case_file << ": decode 'p0' = " << call.p0
                                                           << " is not the query's position n - 1 = " << (n - 1));
    call.p0 = 0;
  } else {
    KASCADE_CHECK(nq <= n, q_file << ": nq=" << nq << " queries exceed k.npy's n=" << n << " keys");
    KASCADE_CHECK(call.p0 == n - nq, case_file << ": 'p0' = " << call.p0 << (c.has_p0 ? "" : " (default)")
                                               << " does not match n - nq = " << n << " - " << nq << " = " << (n - nq)
                                               << " (k.npy, q.npy)");
  }
  if (call.role == Role::Reuse && !call.head_map.empty()) {
    KASCADE_CHECK(static_cast<int>(call.head_map.size()) == hkv,
                  case_file << ": 'head_map' has " << call.head_map.size() << " entries, expected Hkv=" << hkv);
    for (int g = 0; g < hkv; ++g) {
      KASCADE_CHECK(call.head_map[g] < hkv, case_file << ": 'head_map'[" << g << "] = " << call.head_map[g]
                                                      << " is not a kv head in [0, " << hkv << ")");
    }
  }
  const fs::path select_path = case_dir / "select.npy";
  ref::Selection reused;
  if (call.role == Role::Reuse) {
    reused = read_selection(select_path, call, hkv, nq, n);
  } else {
    KASCADE_CHECK(!fs::exists(select_path), select_path.string() << ": given for role " << case_role_name(call.role)
                                                                 << "; only role reuse reads a selection");
  }

  const ref::Result r = ref::attend(call, q.data<float>(), k.data<float>(), v.data<float>(), hq, hkv, nq, n, d,
                                    call.role == Role::Reuse ? &reused : nullptr);
  std::vector<std::pair<std::string, std::vector<uint8_t>>> files;
  files.emplace_back("out.npy", encode_npy(DType::F32, {hq, nq, d}, r.out.data()));
  if (call.role != Role::Reuse) {
    const ref::Selection& s = r.selection;
    files.emplace_back("select.npy", encode_npy(DType::I32, {s.num_sets, s.num_tiles, s.k_max}, s.index.data()));
  }
  write_outputs(out_dir, files);
  return 0;
}

const Command kRegistration("reference", "run one attention call of the CPU oracle (SPEC 9 case directory)",
                            run_reference);

}  // namespace
}  // namespace kascade::cli
