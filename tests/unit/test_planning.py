"""The plan of a job, as pure logic: which chunks, in which order (mailsync.planning)."""

from __future__ import annotations

from mailsync.planning import FolderPlan, chunk_rows

INBOX = FolderPlan("inbox-id", full=True, estimated=1_200, start_link=None)
EMPTY = FolderPlan("empty-id", full=True, estimated=0, start_link=None)
KEPT = FolderPlan("archive-id", full=False, estimated=0, start_link="https://graph/delta?t=1")


def test_full_chunks_of_every_listed_folder_come_first_then_one_round_per_folder() -> None:
    chunks = chunk_rows([INBOX, EMPTY, KEPT], chunk_size=500, windowed=False)
    shape = [(c["chunk_index"], c["kind"], c["folder_id"], c["last_in_folder"]) for c in chunks]
    assert shape == [
        (1, "full", "inbox-id", False),
        (2, "full", "inbox-id", False),
        (3, "full", "inbox-id", True),  # the folder's last chunk runs to its end
        (4, "delta", "inbox-id", True),
        (5, "delta", "empty-id", True),  # an empty folder: its round brings what arrives
        (6, "delta", "archive-id", True),
    ]
    assert [c["estimated_emails"] for c in chunks[:3]] == [500, 500, 200]
    rounds = {c["folder_id"]: c["checkpoint_data"] for c in chunks if c["kind"] == "delta"}
    assert rounds["inbox-id"] == {"start_link": None, "mode": "initial"}  # from scratch
    assert rounds["archive-id"] == {"start_link": KEPT.start_link, "mode": "incremental"}


def test_a_windowed_job_is_full_chunks_only_and_lists_even_an_empty_folder() -> None:
    chunks = chunk_rows([INBOX, EMPTY], chunk_size=1_000, windowed=True)
    assert [(c["kind"], c["folder_id"]) for c in chunks] == [
        ("full", "inbox-id"),
        ("full", "inbox-id"),
        ("full", "empty-id"),
    ]
