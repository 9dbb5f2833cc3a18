#!/usr/bin/env bash
# Installs everything larsctl needs into ./.venv, idempotently.
#   .ci/setup.sh [demo|test] [--no-apt]
#   demo: MPI, the Python stack (torch, torchvision, DALI, Horovod, ...)
#   test: the same plus the test tools (Slurm, munge, Torque wrappers, shellcheck, pytest)
#         and both experiment trackers (the extras mlflow and wandb)
# As root (or with passwordless sudo) on Debian/Ubuntu it installs the missing Debian
# packages first.  Otherwise (a cluster login node: no root, `module load` instead of
# apt), or with --no-apt, apt is skipped and the prerequisites are checked instead:
# each missing one is named with how clusters usually provide it, exit 2.
# Horovod is built against the MPI found on PATH (mpicc), with NCCL operations when
# a CUDA toolkit and NCCL are found (CUDA_HOME / NCCL_HOME, as modules set them).
# A stamp file skips work already done for the same inputs, so `make test` a second
# time starts the tests within seconds.
cd "$(dirname "$0")/.."
source .ci/lib.sh

profile=demo apt=auto
for arg in "$@"; do
  case $arg in
    demo|test) profile=$arg ;;
    --no-apt) apt=no ;;
    *) log "unknown argument '$arg'; usage: .ci/setup.sh [demo|test] [--no-apt]"; exit 2 ;;
  esac
done
venv=${VENV:-.venv}
python=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}
cache=${LARSCTL_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/larsctl/wheels}

# --- Debian packages (skipped without root) ---------------------------------------
debs=(openmpi-bin libopenmpi-dev cmake g++ make)
if [ "$profile" = test ]; then
  # A real Slurm for the submit tests (single-node, and a multi-node one in network
  # namespaces with sshd per node: iproute2, openssh), Torque-compatible qsub/qstat/qdel
  # on top of it for the PBS client side, and shellcheck for generated scripts.
  debs+=(slurmctld slurmd slurm-client munge slurm-wlm-torque shellcheck procps
         iproute2 openssh-server openssh-client)
fi
sudo=()
if [ "$apt" = auto ]; then
  if [ "$(id -u)" = 0 ]; then apt=yes
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then apt=yes sudo=(sudo)
  else apt=no; log "not root and no passwordless sudo: skipping apt (as --no-apt); checking prerequisites instead"
  fi
fi
if [ "$apt" = yes ]; then
  command -v dpkg-query >/dev/null || { log "no dpkg-query here (not Debian/Ubuntu): rerun with --no-apt"; exit 2; }
  missing_debs=()
  for d in "${debs[@]}"; do
    [ "$(dpkg-query -W -f '${db:Status-Status}' "$d" 2>&1)" = installed ] || missing_debs+=("$d")
  done
  if [ ${#missing_debs[@]} -gt 0 ]; then
    hint "apt-get could not install ${missing_debs[*]}: check the network or the apt sources, or install them yourself and rerun with --no-apt"
    log "apt-get install ${missing_debs[*]}"
    "${sudo[@]}" apt-get update -qq
    # Slurm/munge postinst scripts try to start services; there is no systemd here.
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
      "${missing_debs[@]}" >/dev/null
  fi
elif [ "$profile" = test ]; then
  log "without apt the test Slurm, munge and shellcheck must already be installed; tests that need them skip"
fi

# --- Prerequisites (what apt provides as root; modules provide on clusters) ---------
min_py=$(min_python)
[ -n "$min_py" ] || { log "pyproject.toml has no requires-python = \">=X.Y\" line"; exit 1; }
[ -n "$python" ] || missing "python3 ($min_py or newer): \`module load python/3.11\`; Debian: \`apt-get install python3\`"
"$python" -c 'import sys; sys.exit(sys.version_info < tuple(map(int, sys.argv[1].split("."))))' "$min_py" ||
  missing "Python $min_py or newer ($python is $("$python" -V 2>&1)): \`module load python/3.11\`, or PYTHON=/path/to/python3.11"
"$python" -c 'import ensurepip, venv' ||
  missing "the venv module of $python: \`module load python\`; Debian: \`apt-get install python3-venv\`"
torch_version=$(pinned torch) horovod_version=$(pinned horovod)
flavour=$(build_flavour)
wheel_dir="$cache/torch-$torch_version/$flavour"
if [ -z "$(find_cached_wheel "$wheel_dir" "$horovod_version")" ]; then
  check_build_tools "$python"
fi

# --- Python virtual environment -----------------------------------------------------
stamp="$venv/.setup-$profile"
want=$(cat constraints.txt pyproject.toml .ci/setup.sh .ci/lib.sh .ci/build-horovod.sh |
       { cat; echo "$flavour"; } | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  log "environment up to date ($venv)"; exit 0
fi
hint "creating the virtual environment $venv with $python failed; is the directory writable?"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt)
# This machine's pip config names local index folders that may be absent; pip
# warns once per package about them, which buries real errors.
exec 2> >(grep --line-buffered -v 'is ignored: it is neither a file nor a directory' >&2)
hint "pip could not install the pinned stack: check access to PyPI (or set PIP_INDEX_URL to your site's mirror) and free disk space (torch needs about 6 GB)"
log "installing torch, torchvision and the Python dependencies (several GB the first time)"
"${pip[@]}" --upgrade pip setuptools wheel
"${pip[@]}" torch torchvision
extras=.
# The tests use both experiment trackers for real (an MLflow server, W&B's offline files).
[ "$profile" = test ] && extras=".[test,mlflow,wandb]"
"${pip[@]}" -e "$extras"
# Horovod has no wheels on PyPI: build it once against this torch and MPI, cache the wheel.
.ci/build-horovod.sh "$venv" "$wheel_dir"
echo "$want" > "$stamp"
log "done"
