# tools/device/lib.sh — sourced by tools/device.sh and its area scripts.

# cuda_library_path: prepends the CUDA toolkit's library folders to LD_LIBRARY_PATH and, when the
# toolkit lacks cuBLAS 13, the folder of the cuBLAS wheel that ships with PyTorch (the binaries
# link cuBLAS and the CUDA runtime dynamically). Safe under set -e: a missing folder is skipped.
cuda_library_path() {
  local lib_dirs wheel
  lib_dirs=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib 2>/dev/null | tr '\n' ' ' || true)
  if ! ls /usr/local/cuda/lib64/libcublas.so.13 >/dev/null 2>&1; then
    wheel=$(python3 -c 'import glob, site; print(":".join(sorted({p.rsplit("/", 1)[0] for s in site.getsitepackages() for p in glob.glob(s + "/nvidia/**/libcublas.so.13", recursive=True)})))' 2>/dev/null || true)
    lib_dirs="$lib_dirs $wheel"
  fi
  export LD_LIBRARY_PATH="$(echo $lib_dirs | tr ' ' ':')${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}
