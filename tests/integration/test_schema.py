"""sql/schema.sql is the schema the migrations make (mailsync.store.schema)."""

from __future__ import annotations

import difflib

from mailsync.store.schema import REGENERATE, SCHEMA_FILE, dump_schema, split


def test_schema_sql_is_the_migrated_schema(database_url: str) -> None:
    """database_url is a copy of a database that every migration was applied to."""
    header, committed = split(SCHEMA_FILE.read_text("utf-8"))
    dumped = dump_schema(database_url)
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            dumped.splitlines(keepends=True),
            "sql/schema.sql",
            "migrated database",
            n=1,
        )
    )
    assert not diff, f"sql/schema.sql differs from the migrated schema: run `{REGENERATE}`\n{diff}"
    assert "chunk state machine" in header.lower()  # the hand-written header is kept
