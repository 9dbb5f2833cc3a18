"""trainer.ranklog: a rank's stdout/stderr copied into its own log file.

Every test runs the RankLog in a child Python process: it replaces fds 1 and 2, which
pytest's own capture holds in this one.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

LINES = 20000  # ~1.8 MB of output: many pipe buffers
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


def run_child(log: Path, lines: int, preexec_fn=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-c", CHILD, str(log), str(lines)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, preexec_fn=preexec_fn)


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
