"""The workdir row: the job directories' parent exists (or can be made) and is really
writable, and is shared between nodes when jobs span several.  Checked from larsctl's own
environment (``submit`` writes the job directory there); nothing is left behind.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from larsctl.config.env import variables_in
from larsctl.doctor.report import Check, fail, in_profile, ok, warn

NODE_LOCAL_FS = ("tmpfs", "ramfs", "devtmpfs")
NODE_LOCAL_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")


def _unescape_mount(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def filesystem_of(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) holding ``path``, from /proc/mounts (("", "") if unknown)."""
    real = os.path.realpath(path)
    best = ("", "")
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount, fstype = _unescape_mount(parts[1]), parts[2]
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best[0]):
                    best = (mount, fstype)
    except OSError:
        pass
    return best


def _writable(directory: Path) -> str:
    """'' when a file can be created in ``directory`` (really tried), else why not."""
    try:
        fd, name = tempfile.mkstemp(prefix=".larsctl-doctor-", dir=directory)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(name)
    return ""


def check_workdir(profile, nodes: int) -> Check:
    """The job directories' parent exists (or can be created) and is writable; shared if multi-node."""
    path = profile.expanded_workdir()
    unset = sorted(variables_in(str(path)))
    if unset:
        return fail("workdir", f"{profile.workdir}: {', '.join('$' + v for v in unset)} not set here",
                    f"export {unset[0]}=... before running larsctl, or "
                    + in_profile(profile, "write the path out in workdir: of {file}"))
    path = path if path.is_absolute() else Path.cwd() / path
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return fail("workdir", f"{path}: cannot be created: {existing} is a file, not a directory",
                    in_profile(profile, "set workdir: in {file} to a writable directory"))
    problem = _writable(existing)
    if problem:
        what = "not writable" if existing == path else f"cannot be created: {existing} is not writable"
        return fail("workdir", f"{path}: {what} ({problem})",
                    in_profile(profile, "set workdir: in {file} to a directory you can write")
                    + ", or fix its permissions")
    mount, fstype = filesystem_of(existing)
    state = "exists, writable" if existing == path else f"will be created (under {existing}, writable)"
    found = f"{path}: {state}; {fstype or 'unknown'} filesystem" + (f" at {mount}" if mount else "")
    real = os.path.realpath(existing)
    local_dir = any(real == d or real.startswith(d + "/") for d in NODE_LOCAL_DIRS)
    if nodes > 1 and (fstype in NODE_LOCAL_FS or local_dir):
        return warn("workdir", f"{found}: node-local, but jobs span {nodes} nodes (ranks on other nodes "
                               "write logs and checkpoints there too)",
                    in_profile(profile, "set workdir: in {file} to a shared filesystem "
                                        "(e.g. $SCRATCH/larsctl)"))
    return ok("workdir", found)
