"""trainer.ranklog: a rank's stdout/stderr copied into its own log file, and a log that cannot
be written (a file size limit, a full device, a directory that is a file) degrading to one
warning without touching the output.

Every test runs the RankLog in a child Python process: it replaces fds 1 and 2, which
pytest's own capture holds in this one.
"""
from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

LINES = 20000  # ~1.8 MB of output: far past the limits below, and many pipe buffers
LINE = "line {i:05d} " + "x" * 80

# argv: log path, number of lines.  Prints to stdout, writes native-level to fd 1, one
# line to stderr, a note (file only), closes, then one line more (console only).
CHILD = f"""
import os, sys
from pathlib import Path
from trainer.ranklog import RankLog

before = [os.fstat(fd)[:2] for fd in (1, 2)]
log = RankLog(Path(sys.argv[1]))
log.note("note: for the file only")
for i in range(int(sys.argv[2])):
    print({LINE!r}.format(i=i))
sys.stdout.flush()
os.write(1, b"native write\\n")
sys.stderr.write("to stderr\\n")  # one write: print() makes two, a note could come between
log.note("note: after the output")
log.close()
print("after close")
print("fds restored" if [os.fstat(fd)[:2] for fd in (1, 2)] == before else "fds NOT restored",
      file=sys.stderr)
"""


def expected_stdout(lines: int) -> str:
    return "".join(LINE.format(i=i) + "\n" for i in range(lines)) + "native write\nafter close\n"


def run_child(log: Path, lines: int = 0, preexec_fn=None, script: str = CHILD):
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-c", script, str(log), str(lines)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, preexec_fn=preexec_fn)


def file_size_limit(limit: int):
    """For preexec_fn: the child's writes to regular files fail with EFBIG past ``limit``."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "rank log" in line]


def test_output_reaches_console_and_file(tmp_path):
    log = tmp_path / "logs" / "ranks" / "rank.0.log"  # parent dirs made by RankLog
    proc = run_child(log, 1000)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected_stdout(1000)
    assert proc.stderr == "to stderr\nfds restored\n"
    text = log.read_text()
    assert text.startswith("note: for the file only\n")
    # A note is written at once, the output when its pump gets to it; stdout and stderr have
    # one pump each: the file has each one's bytes in order, not their order between them.
    body = text.removeprefix("note: for the file only\n")
    for line in ("note: after the output\n", "to stderr\n"):
        assert body.count(line) == 1
        body = body.replace(line, "")
    assert body == expected_stdout(1000).removesuffix("after close\n")
    assert "after close" not in text


def test_close_drains_what_was_written_just_before(tmp_path):
    """close() right after a large write: every byte still reaches the console and the file."""
    log = tmp_path / "rank.0.log"
    proc = run_child(log, LINES)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected_stdout(LINES)
    assert proc.stderr == "to stderr\nfds restored\n"
    assert log.read_text().count("\n") == LINES + 4


def check_degraded(proc: subprocess.CompletedProcess, log: Path, error: str) -> None:
    """The rank lived, the console got everything unchanged, and one warning named the file."""
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected_stdout(LINES)
    found = warnings(proc.stderr)
    assert len(found) == 1, proc.stderr
    assert str(log) in found[0] and error in found[0], found[0]
    assert proc.stderr.replace(found[0] + "\n", "", 1) == "to stderr\nfds restored\n"


def test_file_size_limit_degrades_to_one_warning(tmp_path):
    """RLIMIT_FSIZE: the log's writes fail with EFBIG past 64 KiB (Python ignores SIGXFSZ),
    the one that crosses the limit after writing part of its bytes."""
    limit = 64 * 1024
    log = tmp_path / "rank.3.log"
    proc = run_child(log, LINES, preexec_fn=file_size_limit(limit))
    check_degraded(proc, log, os.strerror(errno.EFBIG))
    # what fitted is an unchanged prefix of the output
    text = log.read_text()
    assert len(text) == limit
    assert ("note: for the file only\n" + expected_stdout(LINES)).startswith(text)


def test_full_disk_degrades_to_one_warning():
    """/dev/full: every write fails with ENOSPC, as on a full disk, from the first note on."""
    check_degraded(run_child(Path("/dev/full"), LINES), Path("/dev/full"),
                   os.strerror(errno.ENOSPC))


def test_unwritable_log_leaves_the_output_alone(tmp_path):
    """A log that cannot even be opened (its directory is a file): one warning, no copy, the
    rank runs with its output untouched, and note()/close() do nothing."""
    (tmp_path / "logs").write_text("not a directory")
    log = tmp_path / "logs" / "rank.0.log"
    proc = run_child(log, 100)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected_stdout(100)
    found = warnings(proc.stderr)
    assert len(found) == 1 and str(log) in found[0], proc.stderr
    assert proc.stderr.replace(found[0] + "\n", "", 1) == "to stderr\nfds restored\n"


NOTE_CHILD = """
import sys
from pathlib import Path
from trainer.ranklog import RankLog

log = RankLog(Path(sys.argv[1]))
log.note("x" * 5000)       # past the limit: fails, warns
log.note("another note")   # already warned: silent
log.close()
print("still running")
"""


def test_note_does_not_raise_when_the_file_cannot_be_written(tmp_path):
    log = tmp_path / "rank.0.log"
    proc = run_child(log, preexec_fn=file_size_limit(1024), script=NOTE_CHILD)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "still running\n"
    found = warnings(proc.stderr)
    assert len(found) == 1 and str(log) in found[0], proc.stderr
    assert os.strerror(errno.EFBIG) in found[0]
    assert proc.stderr == found[0] + "\n"


def test_a_note_never_lands_inside_a_line_written_in_two_parts(tmp_path):
    """print() writes a line's text and its newline separately; a note between them once made
    'cancelled at step 13trainer: cancelled at step 13' the last line of a rank's log."""
    log = tmp_path / "rank.log"
    child = ("import os, sys, time\nfrom pathlib import Path\nfrom trainer.ranklog import RankLog\n"
             "log = RankLog(Path(sys.argv[1]))\nos.write(2, b'text')\ntime.sleep(0.5)\n"
             "log.note('note')\nos.write(2, b' end\\n')\nlog.close()\n")
    r = subprocess.run([sys.executable, "-c", child, str(log)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "text end\n"
    assert log.read_text().splitlines() == ["note", "text end"]
