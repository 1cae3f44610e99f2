from __future__ import annotations

import pytest

import mailsync.sql as sql


def test_parse_queries_splits_named_blocks() -> None:
    text = "-- name: a\n-- first\nSELECT 1;\n\n-- name: b\n-- second\nSELECT %(x)s;\n"
    assert sql.parse_queries(text) == {"a": "SELECT 1;", "b": "SELECT %(x)s;"}


def test_duplicate_query_names_are_an_error() -> None:
    with pytest.raises(ValueError, match="twice"):
        sql.parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


def test_the_state_machine_queries_exist() -> None:
    for name in (
        "claim_chunk",
        "complete_chunk_job",
        "fail_chunk_job",
        "heartbeat_chunk",
        "cleanup_stuck_chunks",
        "get_sync_job_progress",
        "upsert_staged_emails",
        "plan_sync_job",
    ):
        assert name in sql.queries, name


def test_migrations_are_numbered_in_order() -> None:
    versions = [version for version, _, _ in sql.migrations()]
    assert versions == sorted(versions) and versions[0] == 1
    assert len(set(versions)) == len(versions)
