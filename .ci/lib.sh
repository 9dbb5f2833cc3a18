# shellcheck shell=bash
# Shared by .ci/setup.sh and .ci/build-horovod.sh (sourced, not run).
#
# Errors never pass silently: every failing command ends the script through the
# ERR trap, which names the command, the file and line, and what to do next
# (the current stage's hint).  A missing prerequisite is one line naming it and
# how clusters usually provide it, exit 2.
set -Eeuo pipefail

SETUP_HINT=${SETUP_HINT:-"the output above shows what went wrong"}

log() { printf '[setup] %s\n' "$*" >&2; }

# The stage's advice, printed if one of its commands fails.
hint() { SETUP_HINT=$*; }

# One report per failure: a failure inside $(...) or in build-horovod.sh is reported
# where it happened; the callers' traps then only pass the exit code on.
exit_actions=()
at_exit() { exit_actions+=("$1"); }
run_exit_actions() { local a; for a in "${exit_actions[@]}"; do eval "$a"; done; }
trap run_exit_actions EXIT
if [ -z "${SETUP_REPORTED:-}" ]; then
  SETUP_REPORTED=$(mktemp)
  export SETUP_REPORTED
  at_exit "rm -f '$SETUP_REPORTED'"
fi
reported() { [ -s "$SETUP_REPORTED" ]; }

setup_failed() {
  local rc=$1 line=$2 command=$3 file=${BASH_SOURCE[1]:-$0}
  if ! reported; then
    echo 1 > "$SETUP_REPORTED"
    log "FAILED (exit $rc) at $file:$line: $command"
    log "what to do: $SETUP_HINT"
  fi
  exit "$rc"
}
trap 'setup_failed $? $LINENO "$BASH_COMMAND"' ERR

# A prerequisite the user must provide: one line, exit 2.
missing() {
  echo 1 > "$SETUP_REPORTED"
  log "missing prerequisite: $*"
  exit 2
}

# The pinned version of a package in constraints.txt.
pinned() { sed -n "s/^$1==\([^ #]*\).*/\1/p" constraints.txt; }

# The oldest Python larsctl runs on: X.Y of pyproject.toml's requires-python = ">=X.Y" (its one place).
min_python() { sed -n 's/^requires-python *= *">= *\([0-9][0-9.]*\)".*/\1/p' pyproject.toml; }

# The newest cached wheel of horovod VERSION in DIR, or nothing (DIR may not exist yet).
find_cached_wheel() {
  local dir=$1 version=$2
  [ -d "$dir" ] || return 0
  find "$dir" -maxdepth 1 -name "horovod-$version-*.whl" | sort | tail -n 1
}

# CUDA toolkit root, or nothing: CUDA_HOME/CUDA_PATH (set by `module load cuda`),
# /usr/local/cuda*, or the toolkit of the nvcc on PATH.  Only a directory with the
# runtime's headers counts: an nvcc on PATH may be a wrapper script in /usr/local/bin.
cuda_home() {
  local d nvcc
  is_toolkit() { [ -n "$1" ] && [ -f "$1/include/cuda_runtime.h" ]; }
  for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda /usr/local/cuda-*; do
    if is_toolkit "$d"; then echo "$d"; return 0; fi
  done
  if nvcc=$(command -v nvcc); then
    d=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
    if is_toolkit "$d"; then echo "$d"; return 0; fi
  fi
}

# NCCL root, or nothing: HOROVOD_NCCL_HOME / NCCL_HOME / NCCL_ROOT / NCCL_DIR (module
# files set one of them), else a nccl.h beside CUDA or in /usr (Debian's libnccl-dev).
nccl_home() {
  local d
  for d in "${HOROVOD_NCCL_HOME:-}" "${NCCL_HOME:-}" "${NCCL_ROOT:-}" "${NCCL_DIR:-}"; do
    if [ -n "$d" ] && [ -f "$d/include/nccl.h" ]; then echo "$d"; return 0; fi
  done
  for d in "${1:-}" /usr; do
    if [ -n "$d" ] && [ -f "$d/include/nccl.h" ]; then echo "$d"; return 0; fi
  done
}

# Which Horovod build this machine gets: "<mpi fingerprint>-<cpu|nccl>".  A wheel
# built against one MPI installation (or without NCCL) must not be reused with
# another, so the wheel cache is keyed by it.
build_flavour() {
  local mpicc show ops=cpu cuda
  mpicc=$(command -v mpicc) || missing "mpicc (the MPI compiler wrapper Horovod builds against):" \
    "on a cluster \`module load openmpi\` (or your site's MPI: mpich, intel-mpi, cray-mpich);" \
    "on Debian/Ubuntu \`apt-get install libopenmpi-dev openmpi-bin\`"
  show=$("$mpicc" -show)
  cuda=$(cuda_home)
  if [ -n "$cuda" ] && [ -n "$(nccl_home "$cuda")" ]; then ops=nccl; fi
  printf 'mpi-%s-%s\n' "$(printf '%s\n%s\n' "$(readlink -f "$mpicc")" "$show" | sha256sum | cut -c1-8)" "$ops"
}

# The tools a Horovod build from source needs: a C++20 compiler (torch's headers),
# cmake >= 3.13, make and the Python headers of PYTHON.
check_build_tools() {
  local python=$1 cxx=${CXX:-c++} out version
  command -v "$cxx" >/dev/null || missing "a C++ compiler ($cxx not on PATH):" \
    "\`module load gcc/12\` (any GCC >= 10 or Clang >= 12); Debian: \`apt-get install g++\`"
  if ! out=$(printf '#include <concepts>\nint main() { return 0; }\n' |
             "$cxx" -std=c++20 -x c++ - -o /dev/null 2>&1); then
    missing "a C++ compiler new enough for torch's headers (C++20): $cxx says" \
      "\"$(printf '%s' "${out:-no output}" | head -n 1)\"; \`module load gcc/12\` (GCC >= 10 or Clang >= 12), then rerun"
  fi
  command -v cmake >/dev/null || missing "cmake (Horovod's build): \`module load cmake\`," \
    "or \`pip install --user cmake\`; Debian: \`apt-get install cmake\`"
  version=$(cmake --version | sed -n '1s/[^0-9]*\([0-9][0-9.]*\).*/\1/p')
  if [ "$(printf '%s\n3.13\n' "$version" | sort -V | head -n 1)" != 3.13 ]; then
    missing "cmake >= 3.13 (found $version): \`module load cmake\` or \`pip install --user cmake\`"
  fi
  command -v make >/dev/null || missing "make (cmake's build tool): Debian: \`apt-get install make\`"
  "$python" -c 'import os, sys, sysconfig
sys.exit(0 if os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' ||
    missing "the Python headers (Python.h) of $python: \`module load python\` (module Pythons ship them);" \
      "Debian: \`apt-get install python3-dev\`"
}
