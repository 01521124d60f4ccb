#!/usr/bin/env bash
# The main job: installs dependencies, builds the `kascade` CLI, and runs `kascade demo` (extra
# arguments are passed to the demo).
#
# Only the CLI is built (the tests are scripts/test.sh's). With a visible GPU (nvidia-smi lists
# one) and the CUDA toolkit, the build includes the kernels (build/, the release preset's folder)
# and the demo runs on the GPU; without a GPU the CUDA kernels could not run, so the CLI is built
# CPU-only into build-cpu/ (the cpu preset's folder), which on 2 cores takes minutes instead of
# the kernels' ~20. KASCADE_DEMO_BUILD=cuda|cpu overrides the choice.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
choice="${KASCADE_DEMO_BUILD:-}"
if [[ -z "$choice" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    choice=cuda
  else
    choice=cpu
  fi
fi
case "$choice" in
  cuda) build_dir=build; cmake_args="" ;;
  cpu) build_dir=build-cpu; cmake_args="-DKASCADE_CUDA=OFF" ;;
  *) echo "scripts/demo.sh: KASCADE_DEMO_BUILD must be cuda or cpu, got '$choice'" >&2; exit 2 ;;
esac
echo "[demo] building the ${choice} CLI in ${build_dir}/" >&2
KASCADE_BUILD_DIR="$build_dir" KASCADE_BUILD_TARGETS=kascade \
  KASCADE_CMAKE_ARGS="$cmake_args ${KASCADE_CMAKE_ARGS:-}" scripts/setup.sh
echo "[demo] set-up and build took $(( $(date +%s) - start )) s" >&2
exec "$build_dir/bin/kascade" demo "$@"
