#!/usr/bin/env bash
# Re-makes the shipped plan of the default model (SmolLM2-135M-Instruct) and its pictures:
#   plans/smollm2-135m-instruct.json          the plan (anchors, head map, provenance, S and w)
#   docs/calibration/smollm2-135m-instruct.report.json   the full report (C, S, w, every m)
#   docs/calibration/*.png                    tools/plot_calibration.py's pictures
# Usage: tools/calibrate_default.sh [BUILD_DIR]   (default build; the kascade binary must exist)
# Takes about 10 CPU-minutes (8 prompts x 2048 tokens; measured in docs/calibration.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build="${1:-build}"
kascade="$build/bin/kascade"
[[ -x "$kascade" ]] || { echo "calibrate_default.sh: $kascade not found (build first)" >&2; exit 1; }
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# Uncommitted changes to what the plan depends on (engine, calibration, core, this command).
if [[ -n "$(git status --porcelain -- include src/core src/engine src/reference src/calibrate \
             src/cli/calibrate_cmd.cpp 2>/dev/null)" ]]; then commit="$commit+local changes"; fi
mkdir -p plans docs/calibration
"$kascade" calibrate --model default --dev-set builtin --seed 1 --prompts 8 --length 2048 \
  --anchors 3..8 --rho 0.1 --name smollm2-135m-instruct --notes "commit $commit" \
  --out plans/smollm2-135m-instruct.json --report docs/calibration/smollm2-135m-instruct.report.json
python3 tools/plot_calibration.py docs/calibration/smollm2-135m-instruct.report.json docs/calibration
