#!/usr/bin/env bash
# Installs everything larsctl needs on a fresh Debian machine with Python 3.11,
# into ./.venv, idempotently.  Usage: .ci/setup.sh [demo|test]
#   demo: Debian MPI packages, the Python stack (torch, torchvision, DALI, Horovod, ...)
#   test: the same plus the test tools (Slurm, munge, Torque wrappers, shellcheck, pytest)
# A stamp file skips work that was already done for the same inputs, so
# `make test` a second time starts the tests within seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-demo}
venv=${VENV:-.venv}
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
cache=${LARSCTL_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/larsctl/wheels}

log() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages -----------------------------------------------------
debs=(openmpi-bin libopenmpi-dev cmake g++ make)
if [ "$profile" = test ]; then
  # A real single-node Slurm for the submit tests, Torque-compatible qsub/qstat/qdel
  # on top of it for the PBS client side, and shellcheck for generated scripts.
  debs+=(slurmctld slurmd slurm-client munge slurm-wlm-torque shellcheck procps)
fi
missing=()
for d in "${debs[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  # Slurm/munge postinst scripts try to start services; there is no systemd here.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python virtual environment -------------------------------------------
stamp="$venv/.setup-$profile"
want=$(cat constraints.txt pyproject.toml .ci/setup.sh .ci/build-horovod.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  log "environment up to date ($venv)"; exit 0
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt)
# This machine's pip config names local index folders that may be absent; pip
# warns once per package about them, which buries real errors.
exec 2> >(grep --line-buffered -v 'is ignored: it is neither a file nor a directory' >&2)
log "installing torch, torchvision and the Python dependencies (several GB the first time)"
"${pip[@]}" --upgrade pip setuptools wheel
"${pip[@]}" torch torchvision
extras=.
[ "$profile" = test ] && extras=".[test]"
"${pip[@]}" -e "$extras"
# Horovod has no wheels on PyPI: build it once against this torch and cache the wheel.
.ci/build-horovod.sh "$venv" "$cache"
echo "$want" > "$stamp"
log "done"
