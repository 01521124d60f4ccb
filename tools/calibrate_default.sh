#!/usr/bin/env bash
# Re-makes the shipped plan of the default model (SmolLM2-135M-Instruct) and its pictures by the
# loss-chosen protocol (docs/calibration.md):
#   plans/smollm2-135m-instruct.json                      the plan (anchors, head map, pooling, its choice)
#   docs/calibration/smollm2-135m-instruct.report.json    the report (every scored plan, both statistics)
#   docs/calibration/*.png                                tools/plot_calibration.py's pictures
# Usage: tools/calibrate_default.sh [BUILD_DIR] [BACKEND]
#   BUILD_DIR  where bin/kascade is (default build); BACKEND cuda (default) or cpu.
# The default protocol (64 dev prompts: statistics at 2048 tokens, held out at 1k/2k/4k/8k;
# anchor counts 3..10, up to 40 search steps) is
# meant for the GPU backend; on a CPU it takes hours. The dev split's copy and continuation
# prompts read the natural-text corpus (scripts/setup.sh installs it; KASCADE_CORPUS_ROOT points
# elsewhere, e.g. to a copy on a machine without the Debian packages).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build="${1:-build}"
backend="${2:-cuda}"
kascade="$build/bin/kascade"
[[ -x "$kascade" ]] || { echo "calibrate_default.sh: $kascade not found (build first)" >&2; exit 1; }
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# Uncommitted changes to what the plan depends on (engine, eval, calibration, core, this command).
if [[ -n "$(git status --porcelain -- include src/core src/engine src/eval src/reference src/calibrate \
             src/cli/calibrate_cmd.cpp 2>/dev/null)" ]]; then commit="$commit+local changes"; fi
mkdir -p plans docs/calibration
"$kascade" calibrate --model default --backend "$backend" --anchors 3..10 --rho 0.1 --dev-prompts 64 \
  --name smollm2-135m-instruct --notes "commit $commit" \
  --out plans/smollm2-135m-instruct.json --report docs/calibration/smollm2-135m-instruct.report.json
python3 tools/plot_calibration.py docs/calibration/smollm2-135m-instruct.report.json docs/calibration
