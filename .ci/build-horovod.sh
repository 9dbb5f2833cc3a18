#!/usr/bin/env bash
# Builds Horovod 0.28.1 (the last release) against the venv's torch and installs it.
# The wheel is cached per torch version, so a second set-up does not rebuild.
# Usage: .ci/build-horovod.sh VENV CACHE_DIR
set -euo pipefail
venv=$1 cache=$2
py="$venv/bin/python"
version=$(grep -E '^horovod==' constraints.txt | cut -d= -f3)
torch_version=$("$py" -c 'import torch; print(torch.__version__.split("+")[0])')
dir="$cache/torch-$torch_version"
if "$py" -c 'import horovod.torch' 2>/dev/null && \
   [ "$("$py" -c 'import horovod; print(horovod.__version__)')" = "$version" ]; then
  exit 0
fi
find_wheel() { find "$dir" -maxdepth 1 -name "horovod-$version-*.whl" 2>/dev/null | head -n1; }
wheel=$(find_wheel)
if [ -z "$wheel" ]; then
  echo "[setup] building horovod $version against torch $torch_version (about 3 minutes)" >&2
  mkdir -p "$dir"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # Horovod's CMakeLists forces C++14 and drops CXXFLAGS; torch >= 2.10 headers need
  # C++20.  A compiler launcher puts -std=c++20 last on every C++ command line.
  cat > "$tmp/cxx20" <<'SH'
#!/bin/sh
exec "$@" -std=c++20
SH
  chmod +x "$tmp/cxx20"
  # An nvcc on PATH makes torch guess a CUDA home; point it at the real toolkit when
  # there is one.  Without HOROVOD_GPU_OPERATIONS the build is CPU-only (MPI + Gloo).
  cuda_home=${CUDA_HOME:-}
  if [ -z "$cuda_home" ]; then
    for d in /usr/local/cuda /usr/local/cuda-*; do
      if [ -d "$d/include" ]; then cuda_home=$d; break; fi
    done
  fi
  env CMAKE_POLICY_VERSION_MINIMUM=3.5 CMAKE_CXX_COMPILER_LAUNCHER="$tmp/cxx20" \
      ${cuda_home:+CUDA_HOME="$cuda_home" HOROVOD_CUDA_HOME="$cuda_home"} \
      HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 \
      HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
      MAKEFLAGS="-j$(nproc)" \
      "$py" -m pip wheel -q --no-deps --no-build-isolation --no-cache-dir \
        -w "$tmp/out" "horovod==$version" >&2
  mv "$tmp"/out/horovod-*.whl "$dir/"
  wheel=$(find_wheel)
fi
"$py" -m pip install -q --no-deps --force-reinstall "$wheel"
"$py" -m pip install -q -c constraints.txt cloudpickle psutil pyyaml packaging cffi
