#!/usr/bin/env bash
# tools/device_engine.sh — on a GPU machine, run engine-gpu-check (the CUDA backends' logits
# against the CPU backend's, batches against single sequences, decode graphs against eager
# launches) or the engine benchmark (kascade-bench engine).
#
# The binaries are built elsewhere (CUDA 13, sm_90a) and copied to BIN_DIR (default .carry/engine):
#   cmake --preset release
#   cmake --build build --target engine-gpu-check kascade-bench
#   mkdir -p .carry/engine && cp build/bin/{engine-gpu-check,kascade-bench} .carry/engine/
# then on the GPU machine, from the repository root (the plan file is read from the tree):
#   tools/device_engine.sh --check [engine-gpu-check options]              # -> $OUT/engine_check.json
#   tools/device_engine.sh --engine-bench [kascade-bench engine options]   # -> $OUT/engine_bench.json
# With no options the check runs, then (a second process, so that a fault in one leaves the
# other's results) the bench on SmolLM2-135M's shape at 8k, batch 1, with the shipped test plan;
# logged to check.log and bench.log.
# It links cuBLAS and the CUDA runtime dynamically: the toolkit's lib64 and the cuBLAS wheel that
# ships with PyTorch are searched. Logs and JSON go to $OUT (or ./device-out when OUT is unset).
set -euo pipefail
BIN_DIR=${BIN_DIR:-.carry/engine}
OUT_DIR=${OUT:-device-out}
mkdir -p "$OUT_DIR"
lib_dirs=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib 2>/dev/null || true)
# The cuBLAS 13 wheel's directory, when the toolkit lacks the library.
if ! ls /usr/local/cuda/lib64/libcublas.so.13 >/dev/null 2>&1; then
  wheel=$(python3 -c 'import glob, site; print(":".join(sorted({p.rsplit("/", 1)[0] for s in site.getsitepackages() for p in glob.glob(s + "/nvidia/**/libcublas.so.13", recursive=True)})))' 2>/dev/null || true)
  lib_dirs="$lib_dirs $wheel"
fi
export LD_LIBRARY_PATH="$(echo $lib_dirs | tr ' ' ':')${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader 2>&1 | tee "$OUT_DIR/gpu.txt" || true
check() {
  local log=$1
  shift
  "$BIN_DIR/engine-gpu-check" --out "$OUT_DIR" --commit "${COMMIT:-unknown}" "$@" 2>&1 | tee "$OUT_DIR/$log"
}
bench() {
  local log=$1
  shift
  "$BIN_DIR/kascade-bench" engine --out "$OUT_DIR/engine_bench.json" --commit "${COMMIT:-unknown}" "$@" 2>&1 |
    tee "$OUT_DIR/$log"
}
if [ "${1:-}" = "--engine-bench" ]; then
  shift
  bench engine_bench.log "$@"  # set -e and pipefail: a failure exits with its status
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  shift
  check check.log "$@"
  exit 0
fi
if [ $# -eq 0 ]; then
  status=0
  check check.log || status=1
  bench bench.log --models smollm2-135m --plan tests/data/plans/smollm2-135m.json --contexts 8192 --batches 1 \
    --prefill-reps 3 || status=1
  exit $status
fi
echo "tools/device_engine.sh: unknown first argument '$1' (--check or --engine-bench, or none for both)" >&2
exit 2
