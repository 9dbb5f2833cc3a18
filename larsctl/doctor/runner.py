"""Starting the probe the way the batch script starts the trainer, and reading what it found.

The probe (:mod:`larsctl.doctor.probe`) must see what the *job* gets, so it runs in
bash after the profile's ``module load``s (through ``bash -lc`` so ``module``
exists), its environment exports and its venv activation (``launch.setup_lines``),
inside its container if it has one, with the profile's ``python`` (for the ``local``
scheduler without a venv, the interpreter larsctl runs under comes first on PATH,
as ``schedulers/local.py`` does).  The same shell looks up the launch line's
executables and asks them ``--version``.  larsctl itself never imports torch or
Horovod.

A :class:`ProbeRun` starts at once, in a session of its own, and is collected later
(the other checks run meanwhile); leaving its ``with`` block, however that happens
(Ctrl-C included), kills its whole process group.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from larsctl.config.env import expand_path
from larsctl.doctor import probe as probe_module
from larsctl.doctor.report import last_line
from larsctl.schedulers.launch import Shell, container_prefix, join, setup_lines, value_of

PROBE_TIMEOUT_S = 120.0   # an ImageFolder scan of ImageNet on a parallel file system is the slow part
TOOL_TIMEOUT_S = 10       # `tool --version` in the probe's shell


@dataclass
class ProbeResult:
    """What the probe shell found: launcher tools, module loads, and the Python side (``data``)."""

    python_label: str = "python"
    data: dict = field(default_factory=dict)     # the probe's JSON; {} when it did not run
    tools: dict = field(default_factory=dict)    # name -> {"path", "version", "mpi_list"}
    modules_state: str = ""                      # "loaded", "missing" or "" (no modules)
    modules_failed: list = field(default_factory=list)
    modules_log: str = ""
    error: str = ""                              # why there is no JSON
    timed_out: bool = False
    context: str = ""                            # "after module load ..., venv ..." (how it ran)

    def where(self) -> str:
        """`` (after module load ..., venv ...)`` for messages, or ''."""
        return f" ({self.context})" if self.context else ""


def _module_lines(profile) -> list[str]:
    names = " ".join(shlex.quote(m) for m in profile.modules)
    return ["if type module >/dev/null 2>&1; then",
            '  echo loaded > "$out/modules"',
            f"  for larsctl_m in {names}; do",
            '    module load "$larsctl_m" >> "$out/modules.log" 2>&1 || '
            'printf "%s\\n" "$larsctl_m" >> "$out/modules.failed"',
            "  done",
            "else",
            '  echo missing > "$out/modules"',
            "fi"]


def _tool_lines(tools: tuple[str, ...], srun_list: bool) -> list[str]:
    lines = ['larsctl_run() { if command -v timeout >/dev/null 2>&1; then timeout '
             f'{TOOL_TIMEOUT_S} "$@"; else "$@"; fi; }}']
    for i, tool in enumerate(tools):
        q = shlex.quote(tool)
        lines += [f'if command -v {q} > "$out/tool{i}.path" 2>/dev/null; then',
                  f'  larsctl_run {q} --version > "$out/tool{i}.version" 2>&1 < /dev/null',
                  *([f'  larsctl_run {q} --mpi=list > "$out/tool{i}.mpi" 2>&1 < /dev/null']
                    if tool == "srun" and srun_list else []),
                  "fi"]
    return lines


def probe_script(profile, tools: tuple[str, ...], srun_list: bool) -> str:
    """The bash the probe runs: the job's set-up lines, the tool look-ups, then the probe."""
    lines = ['out="$LARSCTL_DOCTOR_OUT"',
             # A login shell's profile may reset PATH; the job inherits the submitter's.
             'PATH="$LARSCTL_DOCTOR_PATH"; export PATH']
    if profile.modules:
        lines += _module_lines(profile)
    lines += [line for line in setup_lines(profile) if not line.startswith("module load ")]
    if profile.scheduler == "local" and not profile.venv:
        lines.append(f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"')
    lines += _tool_lines(tools, srun_list)
    # The source comes on stdin, opened here: a container need not see larsctl's files.
    probe = [*container_prefix(profile), profile.python, "-", Shell('"$LARSCTL_DOCTOR_REQUEST"')]
    lines.append("exec " + join(probe) + ' < "$LARSCTL_DOCTOR_PROBE"')
    return "\n".join(lines) + "\n"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


class ProbeRun:
    """The probe process: started now, collected by :meth:`result`, killed by :meth:`close`."""

    def __init__(self, profile, request: dict, tools: tuple[str, ...] = (), srun_list: bool = False,
                 timeout: float = PROBE_TIMEOUT_S):
        self.profile, self.tools, self.timeout = profile, tools, timeout
        self.tmp = tempfile.TemporaryDirectory(prefix="larsctl-doctor-")
        env = dict(os.environ, LARSCTL_DOCTOR_OUT=self.tmp.name,
                   LARSCTL_DOCTOR_PATH=os.environ.get("PATH", os.defpath),
                   LARSCTL_DOCTOR_PROBE=probe_module.__file__, LARSCTL_DOCTOR_REQUEST=json.dumps(request))
        bash = shutil.which("bash") or "/bin/bash"
        argv = [bash, "-lc" if profile.modules else "-c", probe_script(profile, tools, srun_list)]
        self.start_error, self.started = "", time.monotonic()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, env=env, cwd=self.tmp.name,
                                         start_new_session=True)  # its own process group, for close()
        except OSError as exc:
            self.proc, self.start_error = None, f"cannot run {bash}: {exc.strerror or exc}"

    def __enter__(self) -> "ProbeRun":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Kill the probe if it still runs, and remove its files."""
        self._kill()
        self.tmp.cleanup()

    def _kill(self) -> None:
        """Kill its whole process group (bash, the probe, the tools) while it is not reaped (so
        the group id cannot have been reused)."""
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def result(self) -> ProbeResult:
        """What it found; waits until ``timeout`` seconds after the start, then kills it."""
        probe = ProbeResult(python_label=self.profile.python)
        stdout = stderr = ""
        if self.proc is None:
            probe.error = self.start_error
        else:
            left = max(0.0, self.started + self.timeout - time.monotonic())
            try:
                stdout, stderr = self.proc.communicate(timeout=left)
            except subprocess.TimeoutExpired:
                self._kill()
                stdout, stderr = self.proc.communicate()
                probe.error, probe.timed_out = f"the probe did not finish in {self.timeout:g} s", True
        self._read_shell(probe)
        probe.data = _json_after_marker(stdout)
        probe.context = _context(self.profile, probe)
        if not probe.data and not probe.error:
            probe.error = self._why_no_json(stdout, stderr, probe)
        self.close()
        return probe

    def _read_shell(self, probe: ProbeResult) -> None:
        out = Path(self.tmp.name)
        probe.modules_state = _read(out / "modules").strip()
        probe.modules_failed = _read(out / "modules.failed").split()
        probe.modules_log = last_line(_read(out / "modules.log"))
        for i, tool in enumerate(self.tools):
            path = _read(out / f"tool{i}.path").strip()
            probe.tools[tool] = {"path": path.splitlines()[-1] if path else "",
                                 "version": _read(out / f"tool{i}.version"),
                                 "mpi_list": _read(out / f"tool{i}.mpi")}

    def _why_no_json(self, stdout: str, stderr: str, probe: ProbeResult) -> str:
        tail = last_line(stderr) or last_line(stdout) or "no output"
        code = self.proc.returncode
        if code in (126, 127) or "not found" in tail:
            return f"`{self.profile.python}` did not start here{probe.where()}: {tail}"
        return f"`{self.profile.python}` exited {code}: {tail}"


def _json_after_marker(stdout: str) -> dict:
    for line in stdout.splitlines():
        if line.startswith(probe_module.MARKER):
            try:
                return json.loads(line[len(probe_module.MARKER):])
            except ValueError:
                pass
    return {}


def _context(profile, probe: ProbeResult) -> str:
    """How the probe's environment was made, as far as it worked (for the rows' wording)."""
    parts = []
    if profile.modules:
        loaded = probe.modules_state == "loaded" and not probe.modules_failed
        parts.append(f"after module load {' '.join(profile.modules)}" if loaded
                     else "without the profile's modules")
    if profile.venv:
        prefix = (probe.data.get("python") or {}).get("prefix")
        venv = os.path.realpath(expand_path(profile.venv))
        active = prefix is not None and os.path.realpath(prefix) == venv
        parts.append(f"venv {profile.venv}" if active else f"venv {profile.venv} not active")
    if profile.container:
        parts.append(f"in the {value_of(profile.container.runtime)} container")
    return ", ".join(parts)
