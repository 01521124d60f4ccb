#!/usr/bin/env bash
# The main job: installs dependencies, builds, and runs `kascade demo` (extra arguments are
# passed to the demo).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
exec build/bin/kascade demo "$@"
