"""Whole mailboxes, kept current: every folder, delta rounds, deletions and moves (issue 9).

Real Postgres, the simulator over real HTTP (a nested folder tree with a hidden folder and a
search folder), real Prefect. "Exact" means: the live rows (deleted_at IS NULL) are the
mailbox's messages, one row each, filed under the folder that holds them, with its read flag.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from mailsync.errors import InvalidInputError, SyncIncompleteError
from mailsync.flows.sync_mailbox import sync_mailbox
from mailsync.runtime import reset_runtime
from mailsync.simulator import GraphSimulator
from mailsync.simulator.admin import describe_folders
from mailsync.simulator.folders import DEFAULT_TREE
from mailsync.sync.jobs import begin_job, load_store
from mailsync.sync.planning import plan_job

MAILBOX = "grace@contoso.example"
MESSAGES = 1000  # Inbox 420 of them: a round of three chunks of 200, five pages of 100


def rows(url: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


def live(url: str) -> dict[str, tuple[str, bool]]:
    """graph_id → (folder, is_read) of every live row; fails on a message stored twice."""
    found = rows(
        url, "SELECT graph_id, parent_folder_id, is_read FROM emails WHERE deleted_at IS NULL"
    )
    ids = [r["graph_id"] for r in found]
    assert len(ids) == len(set(ids)), "a message is stored twice"
    return {r["graph_id"]: (r["parent_folder_id"], r["is_read"]) for r in found}


def in_mailbox(box: Any) -> dict[str, tuple[str, bool]]:
    return {m.id: (m.parentFolderId, m.isRead) for m in box.messages()}


def sync(simulator: Any, **options: Any) -> dict[str, Any]:
    options = {"chunk_size": 200, "page_size": 100, **options}
    return sync_mailbox(mailbox=MAILBOX, folder="all", graph_url=simulator.url, **options)


@pytest.fixture(autouse=True)
def _no_attachments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders, rounds and deletions are the subject here, not attachments (their own
    tests: test_attachments.py): fetching every message's files was most of each test."""
    monkeypatch.setenv("MAILSYNC_ATTACHMENTS", "none")


@pytest.fixture()
def box(simulator: Any) -> Any:
    return simulator.add_mailbox(MAILBOX, MESSAGES, seed=41, folders=DEFAULT_TREE)


def test_a_first_sync_stores_every_real_folder_once_and_nothing_of_search_folders(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    summary = sync(simulator)

    assert summary["status"] == "completed" and summary["sync_type"] == "full"
    assert live(database_url) == in_mailbox(box)
    real = [f for f in describe_folders(box) if not f["isSearchFolder"]]
    assert summary["folders"] and len(summary["folders"]) == len(real)
    listed = rows(database_url, "SELECT graph_id, path, is_hidden FROM mail_folders")
    assert {r["graph_id"] for r in listed} == {f["id"] for f in real}
    assert any(r["is_hidden"] for r in listed)  # hidden folders hold real mail
    nested = [r["path"] for r in listed if r["path"].count("/") >= 2]
    assert nested, "a folder two levels down is listed with its path"
    assert all(r["delta_link"] for r in rows(database_url, "SELECT delta_link FROM mail_folders"))
    assert summary["emails_added"] == MESSAGES and summary["emails_deleted"] == 0


def attachment_requests(simulator: Any) -> int:
    """Requests for attachments (lists and contents) the simulator served so far."""
    counted = simulator.attachments
    return int(counted.list_requests + sum(counted.value_requests.values()))


def test_the_second_sync_is_incremental_and_exact_after_adds_deletes_moves_and_reads(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    sync(simulator)
    inbox, archive = box.folder("inbox").id, box.folder("archive").id
    deleted = box.delete_messages(120)
    moved_in = box.move_messages(100, "inbox", "archive")
    moved_out = box.move_messages(100, "archive", "inbox")
    read = box.mark_read(150, read=True)
    added = box.add_messages(110, "inbox")
    requests_before = simulator.stats.as_dict()["data_requests"] - attachment_requests(simulator)

    summary = sync(simulator)

    # the mail's own requests: the added messages' attachments are fetched beside them
    requests = (
        simulator.stats.as_dict()["data_requests"] - attachment_requests(simulator)
    ) - requests_before
    assert summary["status"] == "completed" and summary["sync_type"] == "incremental"
    assert live(database_url) == in_mailbox(box)
    gone = rows(database_url, "SELECT graph_id FROM emails WHERE deleted_at IS NOT NULL")
    assert {r["graph_id"] for r in gone} == set(deleted)
    stored, now = live(database_url), in_mailbox(box)
    moved = set(moved_in) | set(moved_out)
    assert {now[i][0] for i in moved} == {inbox, archive}  # both directions happened
    assert all(stored[i][0] == now[i][0] for i in moved)  # one live row, in its new folder
    assert all(stored[i][1] is True for i in read if i in now)
    assert summary["emails_deleted"] == len(deleted)
    assert summary["emails_added"] == len(added)
    # A few requests per folder (listing, one round each) plus a page per 100 changes.
    folders = len(summary["folders"])
    changes = len(deleted) + 2 * (len(moved_in) + len(moved_out)) + len(read) + len(added)
    assert requests <= 4 * folders + changes // 100 + 10, requests


def test_mail_changed_while_the_first_sync_runs_is_exact_after_the_next(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    simulator.faults.mutate_every_pages = 3
    simulator.faults.add_per_mutation = 5
    simulator.faults.delete_per_mutation = 4
    first = sync(simulator)
    simulator.faults.mutate_every_pages = 0
    assert first["status"] == "completed"
    assert box.added_ids and box.deleted_ids  # the mailbox changed under the full sync

    second = sync(simulator)

    assert second["status"] == "completed" and second["sync_type"] == "incremental"
    assert live(database_url) == in_mailbox(box)


def test_an_expired_delta_token_restarts_the_round_and_reconciles(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    sync(simulator)
    deleted = box.delete_messages(60)
    box.add_messages(40, "inbox")
    simulator.expire_delta_tokens()

    summary = sync(simulator)

    assert summary["status"] == "completed"
    assert summary["delta_resets"] >= 1
    assert live(database_url) == in_mailbox(box)
    gone = rows(database_url, "SELECT graph_id FROM emails WHERE deleted_at IS NOT NULL")
    assert {r["graph_id"] for r in gone} == set(deleted)


@contextmanager
def graph_moved(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """The same mailbox (the ``box`` fixture's seed) on a second simulator, another port,
    configured as the Graph host: what a second `mailsync demo` meets."""
    with GraphSimulator() as moved:
        again = moved.add_mailbox(MAILBOX, MESSAGES, seed=41, folders=DEFAULT_TREE)
        monkeypatch.setenv("MAILSYNC_GRAPH_URL", moved.url)
        reset_runtime()
        yield moved, again


def test_delta_links_of_another_graph_host_are_not_followed_and_the_folders_read_again(
    runtime: Any, simulator: Any, box: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAILSYNC_GRAPH_URL changed since the last sync (here: `mailsync demo` run again, its
    simulator on a new port): the kept deltaLinks name the old host. They are not followed
    (the token may not go there); every folder is read from scratch, and the job is exact."""
    sync(simulator)
    with graph_moved(monkeypatch) as (moved, again):
        again.delete_messages(30)
        summary, host = sync(moved), moved.url

    assert summary["status"] == "completed" and summary["sync_type"] == "full"
    assert live(database_url) == in_mailbox(again)
    links = rows(database_url, "SELECT delta_link FROM mail_folders WHERE deleted_at IS NULL")
    assert links and all(r["delta_link"].startswith(host) for r in links)


def test_a_job_planned_on_another_graph_host_restarts_its_rounds_here(
    runtime: Any, simulator: Any, box: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job planned (or left unfinished) against the old host, then run against a new one:
    its rounds' links are treated as expired delta state, every folder restarts from
    scratch, and the job is exact."""
    sync(simulator)
    job, _ = begin_job(
        runtime.db, runtime.settings, mailbox=MAILBOX, folder="all", business_id=None,
        sync_from=None, sync_to=None, chunk_size=400, page_size=100, job_id=None,
    )  # fmt: skip
    store = load_store(runtime.db, job)
    for folder in describe_folders(box):  # a change in every folder: each gets its chunk
        if not folder["isSearchFolder"]:
            box.set_importance(box.pick(1, folder["id"]), "high")
    plan_job(runtime.db, runtime.graph(simulator.url), job, store, 3)  # incremental, old links
    with graph_moved(monkeypatch) as (moved, again):
        again.add_messages(25, "inbox")
        summary = sync_mailbox(job_id=str(job.id), graph_url=moved.url)

    assert summary["status"] == "completed" and summary["sync_type"] == "incremental"
    assert summary["delta_resets"] == len(summary["folders"]) > 1
    assert live(database_url) == in_mailbox(again)


def test_a_token_that_expires_in_the_middle_of_a_round_is_survived(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    sync(simulator, page_size=50)
    box.mark_read(300, read=True)
    box.delete_messages(30)
    simulator.faults.expire_delta_tokens_after_pages = 2

    summary = sync(simulator, page_size=50)

    assert summary["status"] == "completed" and summary["delta_resets"] >= 1
    assert live(database_url) == in_mailbox(box)


def test_error_quota_exceeded_falls_back_to_a_full_listing(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    sync(simulator)
    deleted = box.delete_messages(50)
    box.move_messages(20, "inbox", "archive")
    simulator.faults.delta_quota_exceeded = True

    summary = sync(simulator)

    assert summary["status"] == "completed"
    assert summary["delta_fallbacks"] == len(summary["folders"])
    assert live(database_url) == in_mailbox(box)
    gone = rows(database_url, "SELECT graph_id FROM emails WHERE deleted_at IS NOT NULL")
    assert {r["graph_id"] for r in gone} == set(deleted)


def test_a_deleted_folder_is_tombstoned_and_its_mail_removed(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    sync(simulator)
    doomed = next(
        f
        for f in describe_folders(box)
        if f["wellKnownName"] is None and not f["isSearchFolder"] and f["totalItemCount"]
    )
    box.delete_folder(doomed["id"])

    summary = sync(simulator)

    assert summary["status"] == "completed"
    assert live(database_url) == in_mailbox(box)
    tomb = rows(
        database_url, "SELECT deleted_at FROM mail_folders WHERE graph_id = %s", doomed["id"]
    )
    assert tomb and tomb[0]["deleted_at"] is not None


def test_full_forces_a_listing_and_one_folder_can_be_synced_by_name(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    only_inbox = sync_mailbox(mailbox=MAILBOX, folder="inbox", graph_url=simulator.url)
    inbox = box.folder("inbox").id
    assert only_inbox["status"] == "completed"
    assert set(live(database_url)) == box.folder_ids("inbox")
    assert {folder for folder, _ in live(database_url).values()} == {inbox}

    again = sync(simulator, full=True)
    assert again["sync_type"] == "full"
    assert live(database_url) == in_mailbox(box)


def test_an_unknown_folder_name_is_a_clear_error(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    with pytest.raises(InvalidInputError, match="no folder 'nonesuch'"):
        sync_mailbox(mailbox=MAILBOX, folder="nonesuch", graph_url=simulator.url)
    assert rows(database_url, "SELECT count(*) AS n FROM emails")[0]["n"] == 0


def test_a_malformed_delta_page_fails_that_folder_only(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    sync(simulator)
    box.add_messages(130, "inbox")
    box.add_messages(30, "archive")
    # Planning asks every folder's round in one $batch (a delta page each), whose answers
    # are handed to the chunks: the first page after those is Inbox's second (pages of 100).
    real = [f for f in describe_folders(box) if not f["isSearchFolder"]]
    simulator.faults.malformed_delta_page_at = len(real) + 1

    with pytest.raises(SyncIncompleteError) as failed:
        sync(simulator)

    summary = failed.value.summary
    assert summary["status"] == "partial_failure"
    broken = [f for f in summary["folders"] if f["failed_chunks"]]
    assert len(broken) == 1
    chunk = rows(
        database_url, "SELECT error_category FROM chunked_sync_jobs WHERE status = 'failed'"
    )
    assert [c["error_category"] for c in chunk] == ["bad_data"]


def test_a_folder_whose_round_never_ends_keeps_its_mail_and_its_old_delta_link(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    """A --full resync presumes every message of a folder removed until its round shows
    it. When the folder's last chunk fails for good, the round never reaches its end: the
    messages it did not show are not gone, and the job must not mark them deleted (the
    folder keeps its older deltaLink, so no later round would bring them back)."""
    sync(simulator)
    inbox = box.folder("inbox").id
    old_link = rows(database_url, "SELECT delta_link FROM mail_folders WHERE graph_id = %s", inbox)[
        0
    ]["delta_link"]
    pages = -(-len(box.folder_ids("inbox")) // 100)
    assert pages >= 3, "the inbox needs a round of several chunks"
    simulator.faults.malformed_delta_page_at = pages  # the round's last page

    with pytest.raises(SyncIncompleteError) as failed:
        sync_mailbox(
            mailbox=MAILBOX,
            folder="inbox",
            full=True,
            chunk_size=100,
            page_size=100,
            graph_url=simulator.url,
        )

    summary = failed.value.summary
    assert summary["status"] == "partial_failure" and summary["emails_deleted"] == 0
    assert live(database_url) == in_mailbox(box)
    kept = rows(database_url, "SELECT delta_link FROM mail_folders WHERE graph_id = %s", inbox)
    assert kept[0]["delta_link"] == old_link
    again = sync(simulator)  # incremental, from the folder's older deltaLink
    assert again["status"] == "completed"
    assert live(database_url) == in_mailbox(box)


def test_the_cli_syncs_every_folder_shows_them_and_exits_non_zero_when_incomplete(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    import json

    from typer.testing import CliRunner

    from mailsync.cli import app

    runner = CliRunner()
    first = runner.invoke(app, ["sync", "--mailbox", MAILBOX, "--graph-url", simulator.url])
    assert first.exit_code == 0, first.output
    assert "per folder" in first.stdout and "Inbox" in first.stdout
    assert live(database_url) == in_mailbox(box)

    box.add_messages(120, "inbox")
    # The folders' rounds are asked in one $batch at planning, their first pages handed to
    # the chunks: the page asked next is Inbox's second (pages of 100).
    real = [f for f in describe_folders(box) if not f["isSearchFolder"]]
    simulator.faults.malformed_delta_page_at = len(real) + 1
    options = ["--graph-url", simulator.url, "--page-size", "100", "--json"]
    broken = runner.invoke(app, ["sync", "--mailbox", MAILBOX, *options])
    assert broken.exit_code == 1, broken.output
    summary = json.loads(broken.stdout.strip().splitlines()[-1])  # still printed, as JSON
    assert summary["status"] == "partial_failure" and summary["sync_type"] == "incremental"
    assert "ended partial_failure" in broken.output

    again = runner.invoke(
        app, ["sync", "--mailbox", MAILBOX, "--graph-url", simulator.url, "--full", "--json"]
    )
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout.strip().splitlines()[-1])["sync_type"] == "full"
    assert live(database_url) == in_mailbox(box)


def test_mail_changed_while_a_folder_is_first_read_is_exact_when_the_job_ends(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    # Inbox's round from scratch (pages of 100, chunks of 200) is fixed when its first page
    # is served; what changes after that comes in its catch-up round, in the same job.
    simulator.faults.mutate_after_delta_pages = 3
    simulator.faults.delta_mutations = [
        {"op": "add", "count": 6, "folder": "inbox"},
        {"op": "delete", "count": 5, "folder": "inbox"},
        {"op": "move", "count": 4, "folder": "inbox", "to": "archive"},
        {"op": "read", "count": 7, "folder": "inbox"},
    ]
    before = in_mailbox(box)

    summary = sync(simulator, chunk_size=200, page_size=100)

    assert simulator.faults.mutate_after_delta_pages is None  # it fired, mid-round
    assert in_mailbox(box) != before
    assert summary["status"] == "completed" and summary["sync_type"] == "full"
    assert live(database_url) == in_mailbox(box)
