"""Where a run's outputs came from: the git revision of the code that made them.

Training, evaluation and export all record it beside what they write, so it lives here rather than in
any one of those stages.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_revision(folder: str | Path | None = None) -> dict | None:
    """The commit of the git checkout holding ``folder`` (default: this package's source), or None.

    Returns:
        ``{"commit": sha, "dirty": bool}``; dirty means tracked files differ from the commit.
    """
    folder = Path(folder or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an installed wheel), or no git
    return {"commit": commit, "dirty": bool(status.strip())}
