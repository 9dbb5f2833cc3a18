#!/usr/bin/env bash
# Installs Horovod 0.28.1 (the last release) into VENV, built against the venv's torch
# and the MPI found on PATH (mpicc), with NCCL operations when a CUDA toolkit and NCCL
# are present.  The wheel is cached in WHEEL_DIR (setup.sh keys it by torch version,
# MPI installation and cpu/nccl), so a second set-up does not rebuild.
# Usage: .ci/build-horovod.sh VENV WHEEL_DIR
cd "$(dirname "$0")/.."
source .ci/lib.sh
venv=$1 dir=$2
py="$venv/bin/python"
version=$(pinned horovod)
installed=$("$py" -c 'import importlib.util as u, importlib.metadata as m
print(m.version("horovod") if u.find_spec("horovod") else "")')
if [ "$installed" = "$version" ]; then
  if "$py" -c 'import horovod.torch'; then exit 0; fi
  log "horovod $version is installed but does not import (error above): installing it again"
fi
wheel=$(find_cached_wheel "$dir" "$version")
if [ -z "$wheel" ]; then
  torch_version=$("$py" -c 'import torch; print(torch.__version__.split("+")[0])')
  check_build_tools "$py"
  log "building horovod $version against torch $torch_version and $(command -v mpicc) (about 3 minutes)"
  mkdir -p "$dir"
  tmp=$(mktemp -d)
  at_exit "rm -rf '$tmp'"
  # Horovod's CMakeLists forces C++14 and drops CXXFLAGS; torch >= 2.10 headers need
  # C++20.  A compiler launcher puts -std=c++20 last on every C++ command line.
  cat > "$tmp/cxx20" <<'SH'
#!/bin/sh
exec "$@" -std=c++20
SH
  chmod +x "$tmp/cxx20"
  # An nvcc on PATH makes torch guess a CUDA home; point it at the real toolkit when
  # there is one.  With NCCL too, allreduce runs on the GPUs (HOROVOD_GPU_OPERATIONS);
  # otherwise the build is CPU-only (MPI + Gloo).
  cuda=$(cuda_home)
  nccl=$(nccl_home "$cuda")
  gpu=()
  if [ -n "$cuda" ]; then
    gpu+=(CUDA_HOME="$cuda" HOROVOD_CUDA_HOME="$cuda")
    if [ -n "$nccl" ]; then
      log "CUDA in $cuda and NCCL in $nccl: building with HOROVOD_GPU_OPERATIONS=NCCL"
      gpu+=(HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_HOME="$nccl" HOROVOD_NCCL_LINK=SHARED)
    fi
  fi
  hint "the Horovod build failed (its compiler output is above); check the C++ compiler, cmake and MPI modules, or see https://horovod.readthedocs.io/en/stable/install_include.html"
  env CMAKE_POLICY_VERSION_MINIMUM=3.5 CMAKE_CXX_COMPILER_LAUNCHER="$tmp/cxx20" "${gpu[@]}" \
      HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 \
      HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
      MAKEFLAGS="-j$(nproc)" \
      "$py" -m pip wheel -q --no-deps --no-build-isolation --no-cache-dir \
        -w "$tmp/out" "horovod==$version" >&2
  mv "$tmp"/out/horovod-*.whl "$dir/"
  wheel=$(find_cached_wheel "$dir" "$version")
fi
hint "installing the Horovod wheel $wheel failed; delete it to rebuild"
"$py" -m pip install -q --no-deps --force-reinstall "$wheel"
"$py" -m pip install -q -c constraints.txt cloudpickle psutil pyyaml packaging cffi
