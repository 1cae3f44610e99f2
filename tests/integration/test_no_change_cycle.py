"""A mailbox kept current when little changed (issue 23): the folder tree by its own delta,
every folder's round asked in one JSON $batch, no chunk for a folder whose round is empty.

Real Postgres, the simulator over real HTTP (its stats count what Graph would), real
Prefect, real Graph limits in Postgres.
"""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from mailsync.errors import ThrottledError
from mailsync.flows.sync_mailbox import sync_mailbox
from mailsync.graph.batch import get_many
from mailsync.graph.delta import delta_url
from mailsync.simulator.admin import describe_folders
from mailsync.simulator.folders import DEFAULT_TREE

MAILBOX = "ada@contoso.example"


def rows(url: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


def live(url: str) -> dict[str, tuple[str, bool]]:
    found = rows(
        url, "SELECT graph_id, parent_folder_id, is_read FROM emails WHERE deleted_at IS NULL"
    )
    assert len(found) == len({r["graph_id"] for r in found}), "a message is stored twice"
    return {r["graph_id"]: (r["parent_folder_id"], r["is_read"]) for r in found}


def in_mailbox(box: Any) -> dict[str, tuple[str, bool]]:
    return {m.id: (m.parentFolderId, m.isRead) for m in box.messages()}


def sync(simulator: Any) -> dict[str, Any]:
    return sync_mailbox(
        mailbox=MAILBOX, folder="all", graph_url=simulator.url, chunk_size=400, page_size=100
    )


def real_folders(box: Any) -> list[dict[str, Any]]:
    return [f for f in describe_folders(box) if not f["isSearchFolder"]]


def chunks_of(url: str, job_id: str) -> list[dict[str, Any]]:
    return rows(url, "SELECT * FROM chunked_sync_jobs WHERE parent_sync_job_id = %s", job_id)


@pytest.fixture()
def box(simulator: Any) -> Any:
    return simulator.add_mailbox(MAILBOX, 1200, seed=23, folders=DEFAULT_TREE)


def test_a_sync_when_nothing_changed_costs_two_requests_and_no_chunk(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    sync(simulator)
    before = simulator.stats.as_dict()

    summary = sync(simulator)

    after = simulator.stats.as_dict()
    requests = after["data_requests"] - before["data_requests"]
    assert summary["status"] == "completed" and summary["sync_type"] == "incremental"
    assert requests <= 3, after["by_kind"]
    assert after["by_kind"].get("batch", 0) - before["by_kind"].get("batch", 0) == 1
    assert summary["folders_unchanged"] == len(real_folders(box))
    assert summary["chunks_total"] == 0 and chunks_of(database_url, summary["job_id"]) == []
    assert live(database_url) == in_mailbox(box)


def test_a_change_in_one_folder_gets_that_folder_a_chunk_and_is_exact(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    sync(simulator)
    archive = box.folder("archive").id
    added = box.add_messages(7, "archive")
    deleted = box.delete_messages(3, "archive")
    box.mark_read(4, "archive")

    summary = sync(simulator)

    assert summary["status"] == "completed"
    assert [c["folder_id"] for c in chunks_of(database_url, summary["job_id"])] == [archive]
    assert summary["folders_unchanged"] == len(real_folders(box)) - 1
    assert summary["emails_added"] == len(added) and summary["emails_deleted"] == len(deleted)
    assert live(database_url) == in_mailbox(box)


def test_a_changed_folders_first_page_comes_from_the_batch_not_asked_again(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    sync(simulator)
    archive = box.folder("archive").id
    # The test above's changes but no new mail: a new message's attachments cost requests
    # of their own (listing, content), and this one counts the sync's requests exactly.
    deleted = box.delete_messages(3, "archive")
    box.mark_read(4, "archive")
    before = simulator.stats.as_dict()

    summary = sync(simulator)

    after = simulator.stats.as_dict()
    kinds = {k: n - before["by_kind"].get(k, 0) for k, n in after["by_kind"].items()}
    # The folder delta and the batch; the archive's round (one page) came in the batch.
    assert after["data_requests"] - before["data_requests"] == 2, kinds
    assert kinds.get("delta", 0) == 0 and kinds["batch"] == 1, kinds
    assert [c["folder_id"] for c in chunks_of(database_url, summary["job_id"])] == [archive]
    assert summary["emails_deleted"] == len(deleted)
    assert live(database_url) == in_mailbox(box)


def test_folders_added_and_removed_come_from_the_folder_delta(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    sync(simulator)
    box.add_folder("Travel", "inbox")
    box.add_messages(5, box.folder("inbox").id)
    travel = next(f for f in box.all_folders() if f.display_name == "Travel")
    box.move(box.pick(3, "inbox"), travel.id)
    receipts = next(f for f in box.all_folders() if f.display_name == "Receipts")
    gone = box.delete_folder(receipts.id)

    summary = sync(simulator)

    assert summary["status"] == "completed"
    folders = rows(database_url, "SELECT graph_id, path, deleted_at FROM mail_folders")
    by_id = {f["graph_id"]: f for f in folders}
    assert by_id[travel.id]["path"] == "Inbox/Travel" and by_id[travel.id]["deleted_at"] is None
    assert by_id[receipts.id]["deleted_at"] is not None
    assert live(database_url) == in_mailbox(box)
    stored_gone = rows(database_url, "SELECT graph_id FROM emails WHERE deleted_at IS NOT NULL")
    assert {r["graph_id"] for r in stored_gone} == set(gone)


def test_a_throttled_batch_item_is_sent_again_after_its_own_retry_after(
    runtime: Any, simulator: Any, box: Any
) -> None:
    graph = runtime.graph(simulator.url)
    waits: list[float] = []
    graph.sleep = waits.append
    folders = [f["id"] for f in real_folders(box)][:5]
    links = {f: delta_url(graph, MAILBOX, f) for f in folders}
    simulator.limits.storm(MAILBOX, 429, count=2, retry_after_s=0.25)

    answers = get_many(graph, MAILBOX, links, max_page_size=50)

    assert set(answers) == set(folders)
    assert all(a.status == 200 and a.body is not None for a in answers.values())
    stats = simulator.stats.as_dict()
    assert stats["by_kind"]["batch"] == 2  # the first, and one more for the 2 throttled items
    assert stats["batch_items"]["delta"] == len(folders) + 2 and stats["throttled"] == 2
    assert waits and waits[0] >= 0.25  # at least the items' Retry-After
    assert graph.throttled == 2


def test_an_item_throttled_past_every_retry_is_its_own_error(
    runtime: Any, simulator: Any, box: Any
) -> None:
    graph = runtime.graph(simulator.url)
    graph.sleep = lambda seconds: None
    folder = real_folders(box)[0]["id"]
    simulator.limits.storm(MAILBOX, 429, count=100, retry_after_s=0.5)

    answers = get_many(graph, MAILBOX, {folder: delta_url(graph, MAILBOX, folder)})

    assert answers[folder].status == 429 and isinstance(answers[folder].error, ThrottledError)
    assert answers[folder].error.retry_after_s == 0.5


@pytest.mark.parametrize(
    ("requests", "why"),
    [
        ([{"id": str(i), "method": "GET", "url": "/users"} for i in range(21)], "at most 20"),
        ([{"id": "1", "method": "GET", "url": "http://x/v1.0/users"}], "relative"),
        ([{"id": "1", "method": "GET", "url": "/users"}] * 2, "used twice"),
    ],
)
def test_the_simulator_refuses_a_batch_graph_refuses(
    simulator: Any, requests: list[dict[str, Any]], why: str
) -> None:
    token = simulator.issue_token()
    answer = httpx.post(
        f"{simulator.url}/v1.0/$batch",
        json={"requests": requests},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 400 and why in answer.json()["error"]["message"]
