#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/fuzz_*.cpp) with clang, AddressSanitizer and UBSan, and runs
# each for a fixed time.
#
#   tools/run_fuzz.sh [SECONDS] [TARGET...]     # default: 30 seconds, every target
#
# Build directory: build-fuzz (override with KASCADE_FUZZ_BUILD); parallel jobs: KASCADE_JOBS (2).
# A dictionary fuzz/<name>.dict is used when present.
# Inputs the fuzzer finds go to BUILD/corpus/<name>/ (fuzz/corpus/<name>/ is read as seeds and
# never written); crashes go to BUILD/artifacts/<name>/. After fixing a crash, copy its input
# into fuzz/corpus/<name>/ so that the ctest test fuzz_replay_<name> keeps it fixed.
# Exits non-zero if any target crashed.
set -euo pipefail

seconds=${1:-30}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KASCADE_FUZZ_BUILD:-$root/build-fuzz}
jobs=${KASCADE_JOBS:-2}

if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  targets=()
  for source in "$root"/fuzz/fuzz_*.cpp; do
    targets+=("$(basename "$source" .cpp)")
  done
fi

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DKASCADE_CUDA=OFF -DKASCADE_FUZZ=ON -DKASCADE_SANITIZE=ON >/dev/null
cmake --build "$build" -j "$jobs" --target "${targets[@]}"

failed=()
for target in "${targets[@]}"; do
  name=${target#fuzz_}
  corpus="$build/corpus/$name"
  artifacts="$build/artifacts/$name"
  mkdir -p "$corpus" "$artifacts"
  seeds=()
  [[ -d "$root/fuzz/corpus/$name" ]] && seeds=("$root/fuzz/corpus/$name")
  options=(-max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/")
  # An optional dictionary of the format's tokens: fuzz/<name>.dict.
  [[ -f "$root/fuzz/$name.dict" ]] && options+=(-dict="$root/fuzz/$name.dict")
  echo "== $target: ${seconds}s"
  if ! "$build/fuzz/$target" "${options[@]}" "$corpus" "${seeds[@]}"; then
    failed+=("$target")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "crashed: ${failed[*]} (inputs under $build/artifacts/)" >&2
  exit 1
fi
echo "all fuzz targets ran ${seconds}s without a crash"
