"""Apply the numbered migrations in sql/migrations, each once, each whole or not at all.

Two processes may upgrade at once: an advisory lock makes the second wait, then find
nothing left to do. Applied versions are recorded in schema_migrations, each with the
sha256 of its file as applied.

Migrations are history (docs/migrations.md): a file edited after a database applied it
leaves that database with a schema no file describes, and every database upgraded later
with another one. So before anything is applied, every recorded migration is checked
against its file (same number, same name, same digest); a mismatch refuses the upgrade,
naming the file (``MigrationHistoryError``). A record made before checksums existed has
none: the files as they are then are adopted as applied, once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from mailsync.errors import DatabaseError, MigrationHistoryError
from mailsync.sql import migrations, queries
from mailsync.store.db import connect, redact_url


@dataclass(frozen=True)
class MigrationFile:
    """One file of sql/migrations."""

    version: int
    name: str
    sql: str

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"

    @property
    def sha256(self) -> str:
        # Of the text as read (universal newlines), so a checkout with CRLF line ends
        # hashes as the committed LF file does; on LF files it equals `sha256sum`.
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AppliedMigration:
    """One row of schema_migrations; sha256 None: recorded before checksums existed."""

    version: int
    name: str
    sha256: str | None


def migration_files() -> list[MigrationFile]:
    """The project's migrations, in version order."""
    return [MigrationFile(version, name, sql) for version, name, sql in migrations()]


def history_problems(applied: list[AppliedMigration], files: list[MigrationFile]) -> list[str]:
    """What makes the recorded history disagree with the files (empty: nothing).

    A row without a digest is checked by name only: its digest is adopted afterwards."""
    by_version = {file.version: file for file in files}
    problems = []
    for row in applied:
        recorded = f"{row.version:04d}_{row.name}.sql"
        file = by_version.get(row.version)
        if file is None and row.version > max(by_version, default=0):
            # Not a removal: a newer mailsync upgraded this database. Its schema may not
            # be what this code expects, so this code does not run on it.
            problems.append(
                f"{recorded} was applied by a newer mailsync (this one's newest migration is"
                f" {max(by_version, default=0):04d}): run that version"
            )
        elif file is None:
            problems.append(f"{recorded} was applied, but sql/migrations/ has no such file")
        elif file.name != row.name:
            problems.append(f"{recorded} was applied, but that number is now {file.filename}")
        elif row.sha256 is not None and row.sha256 != file.sha256:
            problems.append(
                f"sql/migrations/{file.filename} changed after it was applied"
                f" (sha256 then {row.sha256[:12]}…, now {file.sha256[:12]}…)"
            )
    return problems


def check_history(url: str, applied: list[AppliedMigration], files: list[MigrationFile]) -> None:
    """Refuse, naming every file concerned, when the history disagrees with the files."""
    problems = history_problems(applied, files)
    if problems:
        raise MigrationHistoryError(
            f"refusing to upgrade {redact_url(url)}: " + "; ".join(problems) + ". Never edit, "
            "rename or remove an applied migration: restore it as it was and put the change "
            "in a new migration (docs/migrations.md)"
        )


def upgrade(url: str, files: list[MigrationFile] | None = None) -> list[str]:
    """Bring the schema up to date; returns the names of the migrations applied now.

    An up-to-date schema is recognised without the lock and without any right to change
    the schema, so that a least-privilege login (docs/security.md) runs every command.
    Raises MigrationHistoryError, having changed nothing, when an applied migration's file
    changed. ``files``: the project's migrations unless given (tests give a history).
    """
    files = migration_files() if files is None else files
    try:
        with connect(url, autocommit=True) as conn:
            if not _pending(conn, url, files):
                return []
            conn.execute(queries["lock_migrations"])
            try:
                return _upgrade_locked(conn, url, files)
            finally:
                conn.execute(queries["unlock_migrations"])
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DatabaseError(
            f"migration failed on {redact_url(url)}: {exc}; run `mailsync db upgrade` with a "
            "login that may change the schema (docs/security.md)"
        ) from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"migration failed on {redact_url(url)}: {exc}") from exc


def _upgrade_locked(
    conn: psycopg.Connection[Any], url: str, files: list[MigrationFile]
) -> list[str]:
    # The bookkeeping, the check and the adoption in one transaction: a refusal leaves
    # the database exactly as it was, the column included.
    with conn.transaction():
        conn.execute(queries["create_migrations_table"])
        conn.execute(queries["add_migration_checksums"])
        applied = _applied(conn)
        check_history(url, applied, files)
        by_version = {file.version: file for file in files}
        for row in applied:
            if row.sha256 is None:
                adopted = {"version": row.version, "sha256": by_version[row.version].sha256}
                conn.execute(queries["adopt_migration_checksum"], adopted)
    done = {row.version for row in applied}
    applied_now: list[str] = []
    for file in files:
        if file.version in done:
            continue
        with conn.transaction():
            conn.execute(file.sql)  # trusted: the project's own migration files
            record = {"version": file.version, "name": file.name, "sha256": file.sha256}
            conn.execute(queries["record_migration"], record)
        applied_now.append(file.filename.removesuffix(".sql"))
    return applied_now


def _applied(conn: psycopg.Connection[Any]) -> list[AppliedMigration]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [AppliedMigration(**row) for row in cur.execute(queries["applied_migrations"])]


def _pending(conn: psycopg.Connection[Any], url: str, files: list[MigrationFile]) -> bool:
    """Whether there is anything to do: a migration not applied yet, or digests to adopt
    (read-only). A changed file is refused here already, so that every command, not only
    `mailsync db upgrade`, stops on it."""
    row = conn.execute(queries["migrations_bookkeeping"]).fetchone()
    if not row or not row[0] or not row[1]:
        return True
    applied = _applied(conn)
    check_history(url, applied, files)
    done = {row.version for row in applied if row.sha256 is not None}
    return any(file.version not in done for file in files)
