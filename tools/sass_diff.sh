#!/usr/bin/env bash
# tools/sass_diff.sh — compares the machine code (SASS) of the CUDA kernel objects of two builds,
# function by function: the check that a refactor of kernel code is pure (docs/cuda.md).
#
#   tools/sass_diff.sh [--arch ARCHS] [--under DIR] BEFORE AFTER
#
# BEFORE and AFTER are each a build directory whose kascade_cuda objects are built (e.g.
# build-h17), or a git revision: the revision's tree is exported under $SASS_DIFF_WORK
# (default /tmp/kascade-sass-diff/<commit>-<archs>) and its objects are built there (Release,
# CMAKE_CUDA_ARCHITECTURES=ARCHS, $SASS_DIFF_JOBS jobs, default 2); a later call for the same
# commit and ARCHS reuses that build. A build directory is compared as built: build it for the
# same architectures as the other side (a different architecture shows as a difference).
#   --arch ARCHS   CMAKE_CUDA_ARCHITECTURES of revision builds (default 90a; e.g. 80)
#   --under DIR    which objects: those of src/cuda/DIR (default prefill)
# The dumps (cuobjdump -sass) are compared with only the source paths removed (the "identifier"
# lines, and the hash of the file's path in the mangled names of anonymous namespaces);
# instruction text and encodings must match byte for byte. Line info (-lineinfo) is not
# part of the dump, so moved source lines do not count as a difference.
# Needs cuobjdump and nvdisasm: on PATH, in $CUDA_HOME/bin or /usr/local/cuda/bin (pip packages
# nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm carry them under nvidia/cu13/bin).
# Exit status: 0 identical, 1 some function differs (named on stdout), 2 usage or build error.
set -euo pipefail

arch=90a
under=prefill
die() { echo "sass_diff.sh: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --arch) [[ $# -ge 2 ]] || die "--arch needs a value"; arch=$2; shift 2 ;;
    --under) [[ $# -ge 2 ]] || die "--under needs a value"; under=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) break ;;
  esac
done
[[ $# -eq 2 ]] || die "usage: tools/sass_diff.sh [--arch ARCHS] [--under DIR] BEFORE AFTER"

# Revisions are looked up in the repository of the working directory (else of this script).
repo=$(git rev-parse --show-toplevel 2>/dev/null || { cd "$(dirname "$0")/.." && pwd; })
cuda_bin=${CUDA_HOME:-/usr/local/cuda}/bin
find_tool() {
  if command -v "$1" >/dev/null 2>&1; then command -v "$1"
  elif [[ -x $cuda_bin/$1 ]]; then echo "$cuda_bin/$1"
  else die "$1 not found (PATH, $cuda_bin): install the CUDA toolkit's $1 or pip's nvidia-cuda-$1"
  fi
}
cuobjdump=$(find_tool cuobjdump)
NVDISASM_PATH=$(dirname "$(find_tool nvdisasm)")
export NVDISASM_PATH

object_dir() { echo "$1/src/cuda/CMakeFiles/kascade_cuda.dir/$under"; }

# Prints the build directory of BEFORE / AFTER, building a revision first.
resolve() {
  local spec=$1
  if [[ -d $spec ]]; then
    [[ -d $(object_dir "$spec") ]] || die "$spec: no objects under $(object_dir "$spec") (build kascade_cuda first)"
    (cd "$spec" && pwd)
    return
  fi
  local commit
  commit=$(git -C "$repo" rev-parse --verify --quiet "$spec^{commit}") || die "$spec: neither a build directory nor a git revision"
  local work=${SASS_DIFF_WORK:-/tmp/kascade-sass-diff}/${commit:0:12}-${arch//[^0-9a-z]/_}
  if [[ ! -f $work/.built ]]; then
    echo "sass_diff.sh: building $spec (${commit:0:12}) for $arch in $work" >&2
    rm -rf "$work" && mkdir -p "$work/src"
    git -C "$repo" archive "$commit" | tar -x -C "$work/src"
    cmake -S "$work/src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKASCADE_WERROR=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$arch" >"$work/configure.log" 2>&1 || die "configure failed, see $work/configure.log"
    local targets
    targets=$(ninja -C "$work/build" -t targets all | sed -n "s|^\(src/cuda/CMakeFiles/kascade_cuda.dir/$under/[^:]*\.o\):.*|\1|p")
    [[ -n $targets ]] || die "$spec: no objects under src/cuda/$under"
    # shellcheck disable=SC2086
    ninja -C "$work/build" -j "${SASS_DIFF_JOBS:-2}" $targets >"$work/build.log" 2>&1 || die "build failed, see $work/build.log"
    touch "$work/.built"
  fi
  echo "$work/build"
}

before=$(resolve "$1")
after=$(resolve "$2")
out=$(mktemp -d /tmp/sass-diff.XXXXXX)

# Writes one normalised dump per object and a "<function> <sha256 of its SASS>" list per side.
dump_side() {
  local build=$1 side=$2 objects
  objects=$(object_dir "$build")
  mkdir -p "$out/$side"
  (cd "$objects" && find . -name '*.o' | sort) | while read -r rel; do
    local name=${rel#./}
    name=${name//\//__}
    "$cuobjdump" -sass "$objects/$rel" | grep -v '^identifier = ' |
      sed -E 's/_GLOBAL__N__[0-9a-f]+_/_GLOBAL__N__path_/g' >"$out/$side/$name.sass" ||
      die "cuobjdump failed on $objects/$rel"
    # One record per function: its name line up to the next one; hashed apart so that a
    # difference can be named.
    awk -v obj="$name" -v dir="$out/$side" '
      /^[ \t]*Function : / { fn = $3; file = dir "/" obj "." (++n) ".fn"; print obj " " fn " " file >> (dir "/index") }
      fn != "" { print > file }
    ' "$out/$side/$name.sass"
  done
  [[ -f $out/$side/index ]] || die "$build: no functions found in $objects"
  while read -r obj fn file; do
    echo "$obj $fn $(sha256sum <"$file" | cut -c1-64)"
  done <"$out/$side/index" | sort >"$out/$side.list"
}
dump_side "$before" before
dump_side "$after" after

functions=$(wc -l <"$out/after.list")
objects=$(ls "$out/after"/*.sass | wc -l)
if cmp -s "$out/before.list" "$out/after.list"; then
  # The per-function hashes match; compare whole dumps as well (headers, function order).
  if diff -rq -x '*.fn' -x index "$out/before" "$out/after" >/dev/null; then
    echo "identical: $objects objects, $functions functions under src/cuda/$under ($before vs $after)"
    rm -rf "$out"
    exit 0
  fi
fi
echo "SASS differs ($before vs $after); dumps kept in $out"
diff "$out/before.list" "$out/after.list" | sed -n 's/^\([<>]\) \([^ ]*\) \([^ ]*\) .*/\1 \2 \3/p' |
  while read -r side obj fn; do
    label=after; [[ $side == "<" ]] && label=before
    demangled=$fn; command -v c++filt >/dev/null && demangled=$(c++filt "$fn")
    echo "  $label: $obj $demangled"
  done
diff -rq -x '*.fn' -x index "$out/before" "$out/after" | sed 's/^/  /' || true
exit 1
