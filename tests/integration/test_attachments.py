"""Attachment content end to end: real Postgres, the simulator over HTTP, the real flow.

Every stored byte is checked against the simulator's own generator (content_sha256), and
every failure against the rows it must leave behind.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from mailsync.errors import ConfigError, SyncIncompleteError
from mailsync.flows.sync_mailbox import sync_mailbox
from mailsync.simulator.attachments import content_length, content_of, content_sha256
from mailsync.store.db import Database
from mailsync.store.rows import JobRow
from mailsync.tasks.fetch_attachments import attachments_pending
from mailsync.tasks.retention import RetentionPolicy, delete_expired
from tests.e2e.helpers import wait_for

MAILBOX = "ada@contoso.example"


def rows(url: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


def expected_attachments(box: Any) -> dict[str, tuple[str, str | None, int]]:
    """Every attachment of the mailbox: graph id -> (kind, sha256 or None, length)."""
    found = {}
    for message in box.messages():
        for attachment in message.attachments:
            content = content_of(attachment)
            digest = None if content.kind == "reference" else content_sha256(content)
            found[attachment["id"]] = (content.kind, digest, content_length(content))
    return found


def first_of_kind(box: Any, kind: str, skip: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    for message in box.messages():
        for attachment in message.attachments:
            if content_of(attachment).kind == kind and attachment["id"] not in skip:
                return str(attachment["id"])
    raise AssertionError(f"the mailbox has no {kind} attachment")


def add_inline_only(box: Any) -> str:
    """A message without attachments gets an inline image only: hasAttachments stays false,
    its body references the image by cid: (as Graph reports such mail)."""
    message = next(m for m in box.messages() if not m.hasAttachments)
    attachment = {
        "id": "AAMkA-inline-" + message.id[-20:],
        "name": "logo.png",
        "contentType": "image/png",
        "size": 9_000,
        "isInline": True,
        "_kind": "file",
        "_key": "inline-logo",
        "_length": 7_777,
    }
    box.attach(
        message.id,
        [attachment],
        has_attachments=False,
        body_extra=f'<img src="cid:{attachment["id"][-12:]}@contoso.example">',
    )
    return attachment["id"]


def check_stored_exactly(url: str, box: Any, unavailable: set[str]) -> None:
    """attachment_contents holds every attachment, each file and item byte-exact."""
    stored = {
        r["graph_attachment_id"]: r
        for r in rows(
            url,
            "SELECT graph_attachment_id, kind, size_bytes, sha256, content"
            " FROM attachment_contents",
        )
    }
    expected = expected_attachments(box)
    assert set(stored) == set(expected)
    for attachment_id, (kind, digest, length) in expected.items():
        row = stored[attachment_id]
        assert row["kind"] == kind
        if kind == "reference" or attachment_id in unavailable:
            assert row["content"] is None and row["sha256"] is None
            continue
        assert row["sha256"] == digest, attachment_id
        assert hashlib.sha256(bytes(row["content"])).hexdigest() == digest
        assert row["size_bytes"] == length == len(row["content"])
    distinct = {d for k, d, _ in expected.values() if d is not None} - {
        expected[a][1] for a in unavailable
    }
    assert rows(url, "SELECT count(*) AS n FROM attachment_blobs")[0]["n"] == len(distinct)


def test_every_attachment_is_stored_byte_exact_once_per_content(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    box = simulator.add_mailbox(MAILBOX, 500, seed=11)
    inline = add_inline_only(box)
    gone = first_of_kind(box, "file", skip={inline})
    flaky = first_of_kind(box, "file", skip={inline, gone})
    simulator.attachments.not_found.add(gone)
    simulator.attachments.unavailable[flaky] = 2  # 503 twice, then served

    summary = sync_mailbox(mailbox=MAILBOX, graph_url=simulator.url)

    assert summary["status"] == "completed"
    check_stored_exactly(database_url, box, unavailable={gone})
    expected = expected_attachments(box)
    fetchable = [a for a, (kind, _, _) in expected.items() if kind != "reference"]
    assert summary["attachments_unavailable"] == 1
    assert summary["attachments_failed"] == 0
    assert summary["attachments_stored"] + summary["attachments_deduplicated"] == len(fetchable) - 1
    assert summary["attachments_deduplicated"] > 0  # the shared contents
    assert (
        summary["attachments_stored"]
        == rows(database_url, "SELECT count(*) AS n FROM attachment_blobs")[0]["n"]
    )
    assert sum(f["attachments_unavailable"] for f in summary["folders"]) == 1
    assert simulator.attachments.value_requests[flaky] == 3
    assert simulator.attachments.expand_requests == 0  # no delta or list request expanded
    assert rows(
        database_url,
        "SELECT sha256 FROM attachment_contents WHERE graph_attachment_id = %s",
        inline,
    )[0]["sha256"]
    error = rows(
        database_url,
        "SELECT fetch_error FROM email_attachments WHERE graph_attachment_id = %s",
        gone,
    )[0]["fetch_error"]
    assert "404" in error

    # The next sync does not ask for the unavailable one again, nor for any stored one.
    asked = dict(simulator.attachments.value_requests)
    listed = simulator.attachments.list_requests
    again = sync_mailbox(mailbox=MAILBOX, graph_url=simulator.url)
    assert again["status"] == "completed"
    assert simulator.attachments.value_requests == asked
    assert simulator.attachments.list_requests == listed
    assert again["attachments_stored"] == again["attachments_unavailable"] == 0

    # The report's attachment table shows the store's failure rate.
    from mailsync.report import build_report

    report = build_report(database_url, business=summary["business_id"])
    row = report.attachments.iloc[0]
    assert (row["unavailable"], row["failed"], row["pending"]) == (1, 0, 0)
    assert row["stored"] + row["deduplicated"] == len(fetchable) - 1
    assert row["failure_rate"] == round(100 / len(fetchable), 2)


def test_the_jobs_api_calls_count_its_attachment_requests(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    """Listing and fetching attachments are Graph requests of the job: its api_calls is
    every request the mailbox served, those included (they were counted only in the task's
    numbers before)."""
    simulator.add_mailbox(MAILBOX, 150, seed=19)

    summary = sync_mailbox(mailbox=MAILBOX, graph_url=simulator.url)

    assert summary["status"] == "completed"
    fetched = simulator.attachments.list_requests + sum(
        simulator.attachments.value_requests.values()
    )
    assert fetched > 0
    assert summary["api_calls"] == simulator.limits.usage(MAILBOX)["requests"]
    in_chunks = sum(f["api_calls"] for f in summary["folders"])
    assert summary["api_calls"] - in_chunks >= fetched  # planning's requests besides


def test_a_transient_failure_stays_pending_and_the_next_sync_fetches_it(
    runtime: Any, simulator: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = simulator.add_mailbox(MAILBOX, 200, seed=12)
    stubborn = first_of_kind(box, "file")
    simulator.attachments.unavailable[stubborn] = 1_000  # past every retry of this sync
    from mailsync.runtime import reset_runtime

    monkeypatch.setenv("MAILSYNC_HTTP_MAX_RETRIES", "1")
    monkeypatch.setenv("MAILSYNC_HTTP_BACKOFF_BASE_S", "0.01")
    reset_runtime()

    with pytest.raises(SyncIncompleteError) as failed:
        sync_mailbox(mailbox=MAILBOX, graph_url=simulator.url)
    summary = failed.value.summary
    assert summary["status"] == "partial_failure"
    assert summary["error_category"] == "attachments"
    assert summary["attachments_failed"] == 1 and summary["attachments_unavailable"] == 0
    assert summary["chunks_failed"] == 0
    pending = rows(
        database_url,
        "SELECT fetched_at, fetch_error, transient_error FROM email_attachments"
        " WHERE graph_attachment_id = %s",
        stubborn,
    )[0]
    assert pending["fetched_at"] is None and pending["fetch_error"] is None
    assert "503" in pending["transient_error"]

    simulator.attachments.unavailable[stubborn] = 0
    again = sync_mailbox(mailbox=MAILBOX, graph_url=simulator.url)
    assert again["status"] == "completed"
    assert again["attachments_stored"] + again["attachments_deduplicated"] == 1
    check_stored_exactly(database_url, box, unavailable=set())


def test_metadata_mode_lists_without_fetching_content(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    box = simulator.add_mailbox(MAILBOX, 200, seed=13)
    summary = sync_mailbox(mailbox=MAILBOX, graph_url=simulator.url, attachments="metadata")
    assert summary["status"] == "completed"
    listed = rows(database_url, "SELECT graph_attachment_id, kind FROM email_attachments")
    assert {r["graph_attachment_id"] for r in listed} == set(expected_attachments(box))
    assert simulator.attachments.value_requests == {}
    assert rows(database_url, "SELECT count(*) AS n FROM attachment_blobs")[0]["n"] == 0
    # content later: the pending ones are fetched, nothing listed twice
    listed_before = simulator.attachments.list_requests
    later = sync_mailbox(mailbox=MAILBOX, graph_url=simulator.url)
    assert later["status"] == "completed"
    assert simulator.attachments.list_requests == listed_before
    check_stored_exactly(database_url, box, unavailable=set())


def test_expand_on_delta_would_carry_content_and_the_sync_never_asks_for_it(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    box = simulator.add_mailbox(MAILBOX, 300, seed=14)
    simulator.attachments.expand_ignores_select = True  # as reported: docs-contrib#8431
    token = simulator.issue_token()
    url = f"{simulator.url}/v1.0/users/{MAILBOX}/mailFolders/inbox/messages/delta"
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as http:
        params = {"$select": "id", "$expand": "attachments($select=id,name)"}
        expanded = http.get(url, params=params).json()
        plain = http.get(url, params={"$select": "id,hasAttachments"}).json()
    carried = [a for m in expanded["value"] for a in m.get("attachments", [])]
    assert any("contentBytes" in a for a in carried)  # the fault is real
    assert all("attachments" not in m for m in plain["value"])
    asked = simulator.attachments.expand_requests

    summary = sync_mailbox(mailbox=MAILBOX, graph_url=simulator.url)

    assert summary["status"] == "completed"
    assert simulator.attachments.expand_requests == asked  # not one more
    check_stored_exactly(database_url, box, unavailable=set())


def blob(conn: psycopg.Connection[Any], business: UUID, content: bytes, age_h: float) -> str:
    digest = hashlib.sha256(content).hexdigest()
    conn.execute(
        "INSERT INTO attachment_blobs (business_id, sha256, size_bytes, content,"
        " last_referenced_at) VALUES (%s, %s, %s, %s, now() - make_interval(hours => %s))",
        (business, digest, len(content), content, age_h),
    )
    return digest


def test_retention_deletes_orphan_blobs_after_the_grace_and_never_a_fresh_reference(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    simulator.add_mailbox(MAILBOX, 150, seed=15)
    summary = sync_mailbox(mailbox=MAILBOX, graph_url=simulator.url)
    business = UUID(summary["business_id"])
    referenced = rows(database_url, "SELECT count(*) AS n FROM attachment_blobs")[0]["n"]
    assert referenced > 0
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE attachment_blobs SET last_referenced_at = now() - interval '3 days'")
        old_orphan = blob(conn, business, b"old orphan", 25)
        young_orphan = blob(conn, business, b"young orphan", 23)
        contested = blob(conn, business, b"contested", 25)

    # A sync storing the contested content right now: it touched the blob (as
    # touch_attachment_blob does) and has not committed its reference yet.
    db = Database(database_url)
    sync_session = db.transaction(business)
    session = sync_session.__enter__()
    try:
        assert session.one("touch_attachment_blob", business_id=business, sha256=contested)
        deleted = delete_expired(runtime.db, RetentionPolicy())
    finally:
        sync_session.__exit__(None, None, None)
        db.close()

    assert deleted["blobs_deleted"] == 1
    kept = {r["sha256"] for r in rows(database_url, "SELECT sha256 FROM attachment_blobs")}
    assert old_orphan not in kept
    assert {young_orphan, contested} <= kept
    assert len(kept) == referenced + 2  # every referenced blob is kept, however old


def test_retention_that_locked_first_makes_the_sync_store_the_content_anew(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    """The other order: retention holds the doomed blob when the sync touches it; the
    touch waits, finds nothing, and the sync would insert the content again."""
    simulator.add_mailbox(MAILBOX, 20, seed=16)
    summary = sync_mailbox(mailbox=MAILBOX, graph_url=simulator.url)
    business = UUID(summary["business_id"])
    with psycopg.connect(database_url) as conn:
        doomed = blob(conn, business, b"doomed", 30)
    touched: list[Any] = []
    with psycopg.connect(database_url) as retention:
        retention.execute(
            "DELETE FROM attachment_blobs WHERE sha256 = %s", (doomed,)
        )  # holds the row lock until commit
        db = Database(database_url)
        toucher = threading.Thread(
            target=lambda: touched.append(
                db.one("touch_attachment_blob", business, business_id=business, sha256=doomed)
            )
        )
        toucher.start()
        wait_for(  # the touch is blocked on retention's row lock: the race is on
            "the sync's touch to wait for the lock",
            lambda: rows(
                database_url,
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'UPDATE attachment_blobs%%'",
            ),
            timeout_s=30,
            every_s=0.02,
        )
        retention.commit()
        toucher.join(30)
        db.close()
    assert touched == [None]  # no row once the delete committed: the content goes in anew
    assert (
        rows(database_url, "SELECT count(*) AS n FROM attachment_blobs WHERE sha256 = %s", doomed)[
            0
        ]["n"]
        == 0
    )


def test_another_business_sees_no_blob(runtime: Any, simulator: Any, database_url: str) -> None:
    simulator.add_mailbox(MAILBOX, 150, seed=17)
    summary = sync_mailbox(mailbox=MAILBOX, graph_url=simulator.url)
    owner = UUID(summary["business_id"])
    other = UUID("00000000-0000-0000-0000-00000000beef")
    with runtime.db.transaction(owner) as session:
        mine = session.all("get_attachment_content", graph_attachment_id=_any_stored(database_url))
    assert mine and mine[0]["stored"]
    part = {"business_id": owner, "sha256": mine[0]["sha256"], "start": 1, "length": 8}
    with runtime.db.reporting_transaction(owner) as session:
        assert session.one("attachment_content_part", **part)["part"]
    with runtime.db.reporting_transaction(other) as session:
        assert session.one("attachment_content_part", **part) is None  # not even by its hash
    with runtime.db.transaction(other) as session:
        assert (
            session.one("touch_attachment_blob", business_id=owner, sha256=mine[0]["sha256"])
            is None
        )
        assert (
            session.all(
                "get_attachment_content", graph_attachment_id=mine[0]["graph_attachment_id"]
            )
            == []
        )
    with runtime.db.reporting_transaction(other) as session:
        assert (
            session.all(
                "get_attachment_content", graph_attachment_id=mine[0]["graph_attachment_id"]
            )
            == []
        )


def _any_stored(url: str) -> str:
    return str(
        rows(
            url,
            "SELECT graph_attachment_id FROM email_attachments WHERE sha256 IS NOT NULL LIMIT 1",
        )[0]["graph_attachment_id"]
    )


def test_the_cli_writes_one_attachments_bytes(
    runtime: Any, simulator: Any, database_url: str, tmp_path: Any
) -> None:
    from typer.testing import CliRunner

    from mailsync.cli import app

    box = simulator.add_mailbox(MAILBOX, 150, seed=18)
    large = {  # read back in three slices of at most 1 MiB (mailsync.store.blobs.read_bytea)
        "id": "AAMkA-large-attachment",
        "name": "large.bin",
        "contentType": "application/octet-stream",
        "size": 2_700_000,
        "isInline": False,
        "_kind": "file",
        "_key": "large",
        "_length": 2_600_000,
    }
    box.attach(next(iter(box.messages())).id, [large], has_attachments=True)
    summary = sync_mailbox(mailbox=MAILBOX, graph_url=simulator.url)
    assert summary["status"] == "completed"
    expected = expected_attachments(box)
    target = tmp_path / "out.bin"
    business = ["--business", summary["business_id"]]

    for wanted in (first_of_kind(box, "file"), large["id"]):
        result = CliRunner().invoke(
            app, ["attachments", "get", wanted, "-o", str(target), *business]
        )
        assert result.exit_code == 0, result.output
        assert hashlib.sha256(target.read_bytes()).hexdigest() == expected[wanted][1]
        assert target.stat().st_size == expected[wanted][2]
    to_stdout = CliRunner().invoke(app, ["attachments", "get", large["id"], *business])
    assert to_stdout.exit_code == 0
    assert hashlib.sha256(to_stdout.stdout_bytes).hexdigest() == expected[large["id"]][1]
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no partial file left
    reference = first_of_kind(box, "reference")
    refused = CliRunner().invoke(app, ["attachments", "get", reference, *business])
    assert refused.exit_code == 2 and "reference attachment has no content" in refused.output
    unknown = CliRunner().invoke(app, ["attachments", "get", "AAMkA-nope", *business])
    assert unknown.exit_code == 2 and "no attachment" in unknown.output


def test_a_sync_runs_the_fetch_task_only_when_its_store_has_attachments_pending(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    # Each mode's sync leaves the next one's work: marked messages (none), then contents
    # without bytes (metadata), then nothing (content). What is pending decides the task.
    simulator.add_mailbox(MAILBOX, 120, seed=14)
    marked = sync_mailbox(mailbox=MAILBOX, graph_url=simulator.url, attachments="none")
    job = runtime.db.one_as(JobRow, "get_sync_job", marked["business_id"], job_id=marked["job_id"])
    assert job is not None
    assert rows(database_url, "SELECT count(*) AS n FROM attachment_listings")[0]["n"] > 0
    assert not attachments_pending(job, "none")
    assert attachments_pending(job, "metadata") and attachments_pending(job, "content")

    sync_mailbox(mailbox=MAILBOX, graph_url=simulator.url, attachments="metadata")
    assert not attachments_pending(job, "metadata")  # every message listed
    assert attachments_pending(job, "content")  # their bytes not fetched yet

    fetched = sync_mailbox(mailbox=MAILBOX, graph_url=simulator.url, attachments="content")
    assert fetched["attachments_stored"] > 0
    assert not attachments_pending(job, "content") and not attachments_pending(job, "metadata")
    with pytest.raises(ConfigError):  # a mode that does not exist is said, not skipped
        attachments_pending(job, "everything")
