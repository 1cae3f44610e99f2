"""The plan of a job, as pure logic: which chunks, in which order (mailsync.sync.planning)."""

from __future__ import annotations

from mailsync.sync.planning import FolderPlan, chunk_rows

INBOX = FolderPlan("inbox-id", full=True, estimated=1_200, start_link=None)
EMPTY = FolderPlan("empty-id", full=True, estimated=0, start_link=None)
KEPT = FolderPlan("archive-id", full=False, estimated=0, start_link="https://graph/delta?t=1")


def test_a_full_folder_is_one_round_cut_by_its_count_an_incremental_one_is_one_chunk() -> None:
    chunks = chunk_rows([INBOX, EMPTY, KEPT], chunk_size=500, page_size=250, windowed=False)
    shape = [(c["chunk_index"], c["kind"], c["folder_id"], c["last_in_folder"]) for c in chunks]
    assert shape == [
        (1, "delta", "inbox-id", False),
        (2, "delta", "inbox-id", False),
        (3, "delta", "inbox-id", True),  # the folder's last chunk runs to the round's end
        (4, "delta", "empty-id", True),  # an empty folder: one chunk, for its deltaLink
        (5, "delta", "archive-id", True),
    ]
    assert [c["estimated_emails"] for c in chunks] == [500, 500, 200, 0, 0]
    starts = {c["folder_id"]: c["checkpoint_data"] for c in chunks}
    # from scratch; every chunk of a folder names the next folder's round start (requested
    # as soon as this folder's round ends, wherever it ends)
    inbox = {
        "start_link": None,
        "mode": "initial",
        "next_round": {"folder_id": "empty-id", "start_link": None},
    }
    assert [c["checkpoint_data"] for c in chunks[:3]] == [inbox] * 3
    assert starts["empty-id"]["next_round"] == {
        "folder_id": "archive-id",
        "start_link": KEPT.start_link,
    }
    assert starts["archive-id"] == {
        "start_link": KEPT.start_link,
        "mode": "incremental",
    }  # the last


def test_a_windowed_job_is_window_chunks_only_and_lists_even_an_empty_folder() -> None:
    chunks = chunk_rows([INBOX, EMPTY], chunk_size=1_000, page_size=250, windowed=True)
    assert [(c["kind"], c["folder_id"]) for c in chunks] == [
        ("window", "inbox-id"),
        ("window", "inbox-id"),
        ("window", "empty-id"),
    ]


def test_a_delta_chunk_holds_whole_pages() -> None:
    chunks = chunk_rows([INBOX], chunk_size=500, page_size=300, windowed=False)
    assert [c["estimated_emails"] for c in chunks] == [600, 600]  # 500 → two pages of 300


def test_a_plan_with_no_folder_to_sync_has_no_chunk() -> None:
    assert chunk_rows([], chunk_size=500, page_size=250, windowed=False) == []
