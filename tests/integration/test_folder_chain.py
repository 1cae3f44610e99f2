"""Folders read at Graph's own pace (issue 23): what follows a folder's round is asked as
soon as the round's end is read, and the labels of the well-known folders once per store.

Real Postgres, the simulator over real HTTP (the default tree), real Prefect. The overlap
is shown on an event, not a clock: the simulator holds every page request after Inbox's
round, and the next folder's first page is held beside Inbox's catch-up while Inbox's
chunk cannot have ended (it waits for that catch-up).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mailsync.flows.sync_mailbox import sync_mailbox
from mailsync.simulator.admin import describe_folders
from mailsync.simulator.folders import DEFAULT_TREE
from tests.integration.test_whole_mailbox import in_mailbox, live, rows

MAILBOX = "ada@contoso.example"
PAGE = 100


@pytest.fixture()
def box(simulator: Any) -> Any:
    return simulator.add_mailbox(MAILBOX, 2400, seed=43, folders=DEFAULT_TREE)


def sync(simulator: Any, **options: Any) -> dict[str, Any]:
    return sync_mailbox(
        mailbox=MAILBOX,
        folder="all",
        graph_url=simulator.url,
        chunk_size=400,
        page_size=PAGE,
        **options,
    )


def pages_of(box: Any) -> list[int]:
    """Each real folder's round from scratch, in pages (an empty folder is one page)."""
    real = [f for f in describe_folders(box) if not f["isSearchFolder"]]
    return [max(1, -(-f["totalItemCount"] // PAGE)) for f in real]


def test_the_next_folders_first_page_is_asked_while_a_folders_round_ends(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    inbox = box.folder("inbox").id
    inbox_pages = -(-len(box.folder_ids("inbox")) // PAGE)
    assert inbox_pages > 1, "Inbox's round needs a catch-up"
    simulator.faults.hold_timeout_s = 600.0  # longer than anything below waits
    simulator.faults.hold_after_pages = inbox_pages  # Inbox's round is served, then held
    with ThreadPoolExecutor(1) as thread:
        running = thread.submit(sync, simulator)
        try:
            # Inbox's catch-up and the next folder's first page, on the wire together
            held = simulator.faults.wait_held(120, count=2)
            chunks = rows(
                database_url,
                "SELECT folder_id, status FROM chunked_sync_jobs ORDER BY chunk_index",
            )
        finally:
            simulator.faults.release_held()  # before the flow is waited for
        summary = running.result(timeout=600)

    assert held
    assert chunks[0]["folder_id"] == inbox
    # Inbox's last chunk waits for its catch-up (or has not begun: the round's last pages
    # were read ahead while an earlier chunk wrote); no other folder's chunk has begun.
    assert [c["status"] for c in chunks if c["folder_id"] == inbox][-1] != "completed"
    others = [c["status"] for c in chunks if c["folder_id"] != inbox]
    assert others and set(others) == {"pending"}
    assert summary["status"] == "completed"
    assert live(database_url) == in_mailbox(box)


def test_a_first_sync_asks_each_page_once_and_a_catch_up_only_after_a_round_of_pages(
    runtime: Any, simulator: Any, box: Any, database_url: str
) -> None:
    pages = pages_of(box)
    assert 1 in pages and any(p > 1 for p in pages)  # both kinds of folder

    first = sync(simulator)

    assert first["status"] == "completed" and first["sync_type"] == "full"
    assert live(database_url) == in_mailbox(box)
    asked = simulator.stats.as_dict()["by_kind"]
    # Every page of every folder once (none asked ahead and dropped), and a catch-up round
    # only after a round of more than one page: a one-page round was served whole.
    assert asked["delta"] == sum(pages) + sum(1 for p in pages if p > 1)
    assert asked["folder_delta"] == 1 and asked["folder"] == 2  # the tree; inbox, sentitems
    named = rows(database_url, "SELECT graph_id FROM mail_folders WHERE well_known_name = 'inbox'")
    assert [r["graph_id"] for r in named] == [box.folder("inbox").id]

    simulator.stats.reset()
    again = sync(simulator, full=True)

    assert again["status"] == "completed" and again["sync_type"] == "full"
    assert live(database_url) == in_mailbox(box)
    asked = simulator.stats.as_dict()["by_kind"]
    assert "folder" not in asked  # the labels are the store's already: not asked again
    assert asked["delta"] == sum(pages) + sum(1 for p in pages if p > 1)
    named = rows(database_url, "SELECT graph_id FROM mail_folders WHERE well_known_name = 'inbox'")
    assert [r["graph_id"] for r in named] == [box.folder("inbox").id]
