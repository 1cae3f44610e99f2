"""Apply the numbered migrations in sql/migrations, each once, each whole or not at all.

Two processes may upgrade at once: an advisory lock makes the second wait, then find
nothing left to do. Applied versions are recorded in schema_migrations.
"""

from __future__ import annotations

from typing import Any

import psycopg

from mailsync.errors import DatabaseError
from mailsync.sql import migrations, queries
from mailsync.store.db import connect, redact_url


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
            conn.execute(queries["lock_migrations"])
            try:
                conn.execute(queries["create_migrations_table"])
                done = _applied(conn)
                for version, name, body in migrations():
                    if version in done:
                        continue
                    with conn.transaction():
                        conn.execute(body)  # trusted: the project's own migration files
                        record = {"version": version, "name": name}
                        conn.execute(queries["record_migration"], record)
                    applied_now.append(f"{version:04d}_{name}")
            finally:
                conn.execute(queries["unlock_migrations"])
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DatabaseError(
            f"migration failed on {redact_url(url)}: {exc}; run `mailsync db upgrade` with a "
            "login that may change the schema (docs/security.md)"
        ) from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"migration failed on {redact_url(url)}: {exc}") from exc
    return applied_now


def _applied(conn: psycopg.Connection[Any]) -> set[int]:
    return {row[0] for row in conn.execute(queries["applied_migrations"])}


def _pending(conn: psycopg.Connection[Any]) -> bool:
    """Whether a migration has not been applied yet (read-only)."""
    row = conn.execute(queries["migrations_table_exists"]).fetchone()
    if not row or not row[0]:
        return True
    done = _applied(conn)
    return any(version not in done for version, _, _ in migrations())
