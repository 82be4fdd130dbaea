"""Where a checkout keeps its own state when nothing else is configured: the default SQLite database
and the development token.

Outside the project folder on purpose: `chalice local` restarts its server whenever a file under the
project folder changes, so a database kept there restarts it on every job written. One directory per
checkout, in the user's data directory (`$XDG_DATA_HOME`, else `~/.local/share`), so that two clones,
or branches with different migrations, never share a database.
"""
from __future__ import annotations

import hashlib
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
APP_DIR = "a1111-async"


def directory(root: pathlib.Path = ROOT) -> pathlib.Path:
    """`<data home>/a1111-async/<checkout folder>-<hash of its path>`; only computed, never created here."""
    base = os.environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(base):  # the XDG spec: a relative value is ignored
        base = os.path.join(os.path.expanduser("~"), ".local", "share")
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return pathlib.Path(base) / APP_DIR / f"{root.name}-{digest}"


def default_database_url() -> str:
    """DATABASE_URL when none is given: SQLite in this checkout's directory."""
    return f"sqlite:///{directory() / 'jobs.db'}"
