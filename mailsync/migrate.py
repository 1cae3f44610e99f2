"""Apply the numbered migrations in sql/migrations, each once, each whole or not at all.

Two processes may upgrade at once: an advisory lock makes the second wait, then find
nothing left to do. Applied versions are recorded in schema_migrations.
"""

from __future__ import annotations

from typing import Any

import psycopg

from mailsync.db import connect, redact_url
from mailsync.errors import DatabaseError
from mailsync.sql import migrations

_LOCK_KEY = 7_420_001  # an arbitrary constant shared by every mailsync process


def upgrade(url: str) -> list[str]:
    """Bring the schema up to date; returns the names of the migrations applied now.

    An up-to-date schema is recognised without the lock and without any right to change
    the schema, so that a least-privilege login (docs/security.md) runs every command.
    """
    applied_now: list[str] = []
    try:
        with connect(url, autocommit=True) as conn:
            if not _pending(conn):
                return []
            conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
                for version, name, body in migrations():
                    if version in done:
                        continue
                    with conn.transaction():
                        conn.execute(body)  # type: ignore[arg-type]  # trusted file content
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                            (version, name),
                        )
                    applied_now.append(f"{version:04d}_{name}")
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DatabaseError(
            f"migration failed on {redact_url(url)}: {exc}; run `mailsync db upgrade` with a "
            "login that may change the schema (docs/security.md)"
        ) from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"migration failed on {redact_url(url)}: {exc}") from exc
    return applied_now


def _pending(conn: psycopg.Connection[Any]) -> bool:
    """Whether a migration has not been applied yet (read-only)."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return True
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    return any(version not in done for version, _, _ in migrations())
