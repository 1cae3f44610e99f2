"""The migrator against a real database: checksums recorded, adopted, and enforced."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from mailsync.errors import MigrationHistoryError
from mailsync.store.migrate import MigrationFile, migration_files, upgrade
from tests.conftest import drop_database, with_dbname

FILES = migration_files()


@pytest.fixture()
def empty_db(pg_admin_url: str) -> Iterator[str]:
    """A new database without any schema."""
    name = f"mailsync_m_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_dbname(pg_admin_url, name)
    drop_database(pg_admin_url, name)


def record(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT version, name, sha256 FROM schema_migrations ORDER BY version"
        ).fetchall()


def exists(url: str, relation: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (relation,)).fetchone()
    return bool(row and row[0])


def edited(file: MigrationFile) -> MigrationFile:
    return replace(file, sql=file.sql + "\n-- edited after it was applied\n")


def test_each_migration_is_recorded_with_its_files_sha256(database_url: str) -> None:
    assert record(database_url) == [(f.version, f.name, f.sha256) for f in FILES]


def test_an_edited_applied_migration_is_refused_before_anything_is_applied(
    empty_db: str,
) -> None:
    upgrade(empty_db, FILES[:5])
    before = record(empty_db)
    history = [*FILES[:2], edited(FILES[2]), *FILES[3:]]
    with pytest.raises(MigrationHistoryError, match=r"sql/migrations/0003_retention\.sql chang"):
        upgrade(empty_db, history)
    assert record(empty_db) == before  # the record as it was: 0006 on were not applied
    assert not exists(empty_db, "mail_folders")  # made by 0006


def test_an_applied_migration_whose_file_is_gone_is_refused(database_url: str) -> None:
    before = record(database_url)
    with pytest.raises(
        MigrationHistoryError,
        match=re.escape("0003_retention.sql was applied, but sql/migrations/ has no such file"),
    ):
        upgrade(database_url, [*FILES[:2], *FILES[3:]])
    with pytest.raises(MigrationHistoryError, match="applied by a newer mailsync"):
        upgrade(database_url, FILES[:-1])  # a database that an upgraded worker migrated
    assert record(database_url) == before


def test_a_record_without_checksums_adopts_the_files_once(empty_db: str) -> None:
    """A database upgraded before checksums existed: its record has no sha256 column."""
    upgrade(empty_db, FILES[:-1])
    with psycopg.connect(empty_db) as conn:
        conn.execute("ALTER TABLE schema_migrations DROP COLUMN sha256")
    assert upgrade(empty_db) == [FILES[-1].filename.removesuffix(".sql")]
    assert record(empty_db) == [(f.version, f.name, f.sha256) for f in FILES]
    assert upgrade(empty_db) == []
    # Adopted, the digests are enforced like any other.
    with pytest.raises(MigrationHistoryError, match=r"0001_schema\.sql changed"):
        upgrade(empty_db, [edited(FILES[0]), *FILES[1:]])


def test_a_migration_renamed_after_it_was_applied_is_refused_not_adopted(empty_db: str) -> None:
    """As 0011_delta_chunks.sql became 0010 once: a database that applied the old name
    never applied what its number holds now."""
    upgrade(empty_db, FILES[:-1])
    with psycopg.connect(empty_db) as conn:
        conn.execute("ALTER TABLE schema_migrations DROP COLUMN sha256")
        conn.execute("UPDATE schema_migrations SET name = 'delta_chunks' WHERE version = 11")
    with pytest.raises(MigrationHistoryError, match=r"0011_delta_chunks\.sql was applied, but"):
        upgrade(empty_db)
    with psycopg.connect(empty_db) as conn:  # untouched: not even the column was added
        columns = conn.execute(
            "SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute"
            " WHERE attrelid = 'schema_migrations'::regclass AND attnum > 0"
            " AND NOT attisdropped"
        ).fetchone()
        versions = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    assert columns == (["version", "name", "applied_at"],) and versions == (FILES[-2].version,)


def test_the_cli_refuses_with_exit_code_2_naming_the_file(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE schema_migrations SET sha256 = repeat('0', 64) WHERE version = 3")
    done = subprocess.run(
        [sys.executable, "-m", "mailsync.cli", "db", "upgrade"],
        capture_output=True,
        text=True,
        env={**os.environ, "MAILSYNC_DATABASE_URL": database_url, "COLUMNS": "500"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "error (migration)" in done.stderr
    assert "0003_retention.sql changed after it was applied" in done.stderr
