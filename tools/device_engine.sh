#!/usr/bin/env bash
# tools/device_engine.sh — run engine-gpu-check (the CUDA backends' logits against the CPU
# backend's, batches against single sequences, decode graphs against eager launches, then tokens/s
# dense vs Kascade) or the engine benchmark (kascade-bench engine) on a GPU machine.
#
# The binaries are built elsewhere (CUDA 13, sm_90a) and copied to BIN_DIR (default .carry/engine):
#   cmake -S . -B build-engine-cuda -G Ninja -DKASCADE_CUDA=ON
#   cmake --build build-engine-cuda --target engine-gpu-check kascade-bench
#   mkdir -p .carry/engine && cp build-engine-cuda/bin/{engine-gpu-check,kascade-bench} .carry/engine/
# then on the GPU machine, from the repository root (the plan file is read from the tree):
#   tools/device_engine.sh [engine-gpu-check options]
#   tools/device_engine.sh --engine-bench [kascade-bench engine options]   # -> $OUT/engine_bench.json
# With no options the check and the bench run as two processes (a fault in one leaves the other's
# results), logged to check.log and bench.log.
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
run() {
  local log=$1
  shift
  "$BIN_DIR/engine-gpu-check" --out "$OUT_DIR" --commit "${COMMIT:-unknown}" "$@" 2>&1 | tee "$OUT_DIR/$log"
}
if [ "${1:-}" = "--engine-bench" ]; then
  shift
  "$BIN_DIR/kascade-bench" engine --out "$OUT_DIR/engine_bench.json" --commit "${COMMIT:-unknown}" "$@" 2>&1 |
    tee "$OUT_DIR/engine_bench.log"
  exit "${PIPESTATUS[0]}"
fi
if [ $# -eq 0 ]; then
  status=0
  run check.log --check-only || status=1
  run bench.log --bench-only || status=1
  exit $status
fi
run engine-gpu-check.log "$@"
