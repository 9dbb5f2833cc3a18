"""What larsctl reads from the environment: its home, its config dir, and $VARS in paths."""
from __future__ import annotations

import os
import re
from pathlib import Path

# $NAME or ${NAME} with a shell variable name.
VARIABLE = re.compile(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})")


def larsctl_home() -> Path:
    """``$LARSCTL_HOME`` (job database, local runs); default ``~/.local/share/larsctl``."""
    return Path(os.environ.get("LARSCTL_HOME") or "~/.local/share/larsctl").expanduser()


def config_dir() -> Path:
    """``$LARSCTL_CONFIG_DIR`` (user profiles in its ``clusters/``); default ``~/.config/larsctl``."""
    return Path(os.environ.get("LARSCTL_CONFIG_DIR") or "~/.config/larsctl").expanduser()


def variable_name(match: re.Match) -> str:
    return match.group(1) or match.group(2)


def variables_in(text: str) -> set[str]:
    """The $NAME / ${NAME} references in ``text`` (left in a path after expansion: unset)."""
    return {variable_name(m) for m in VARIABLE.finditer(text)}


def expand_path(text: str) -> str:
    """Expand ``~`` and $VARS; LARSCTL_HOME falls back to its documented default.

    A variable that is not set stays as written (see :func:`variables_in`).
    """
    env = dict(os.environ)
    env.setdefault("LARSCTL_HOME", str(larsctl_home()))
    expanded = VARIABLE.sub(lambda m: env.get(variable_name(m), m.group(0)), text)
    return os.path.expanduser(expanded)
