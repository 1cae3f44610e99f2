"""What an operator reads at tenant scale, without I/O: artifact keys per mailbox, and
tables fitted to the terminal's width."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from mailsync.artifacts import changed_nothing, mailbox_key, sync_all_key, sync_description
from mailsync.cli.tables import Col, print_fitted

KEY = re.compile(r"[a-z0-9-]+")  # what Prefect accepts as an artifact key


@pytest.mark.parametrize(
    ("mailbox", "key"),
    [
        ("ada@contoso.example", "mailbox-ada--contoso-example"),
        ("Ada.Lovelace@Contoso.example", "mailbox-ada-lovelace--contoso-example"),
    ],
)
def test_a_plain_address_reads_back_from_its_key(mailbox: str, key: str) -> None:
    assert mailbox_key(mailbox) == key


def test_addresses_that_would_share_a_slug_get_keys_of_their_own() -> None:
    look_alikes = [
        "a.b@x.example",
        "a-b@x.example",
        "a_b@x.example",
        "a@b.x.example",
        "o'brien+billing@x.example",
        "obrien-billing@x.example",
    ]
    keys = [mailbox_key(mailbox) for mailbox in look_alikes]
    assert len(set(keys)) == len(keys)
    assert all(KEY.fullmatch(key) for key in keys)
    assert mailbox_key("A-B@X.example") == mailbox_key("a-b@x.example")  # case is not identity
    assert KEY.fullmatch(sync_all_key("c45c1591-92a9-5e39-bdb2-f4c52281f449"))


def summary(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "job_id": "j1",
        "mailbox": "ada@contoso.example",
        "status": "completed",
        "sync_type": "incremental",
        "folders": [{"folder": "Inbox"}, {"folder": "Sent Items"}],
        "emails_added": 0,
        "emails_updated": 0,
        "emails_deleted": 0,
        "emails_stored": 10,
        "delta_resets": 0,
        "delta_fallbacks": 0,
        "chunks_failed": 0,
        "api_calls": 2,
        "elapsed_s": 0.42,
    }
    return {**base, **changes}


def test_a_sync_that_found_nothing_says_so_in_one_line() -> None:
    assert changed_nothing(summary())
    assert sync_description(summary()) == (
        "ada@contoso.example: 2 folders checked in 0.4 s, nothing changed (job j1)"
    )
    for news in ({"emails_deleted": 1}, {"delta_resets": 1}, {"status": "partial_failure"}):
        assert not changed_nothing(summary(**news))
        assert "nothing changed" not in sync_description(summary(**news))


COLUMNS = (
    Col("mailbox", "mailbox", rank=0),
    Col("folder", "folder", rank=3),
    Col("health", "health", rank=1),
    Col("last_error", "last error", rank=2, fold=True),
)
ROWS = [
    {
        "mailbox": "firstname.lastname@contoso-subsidiary.example",
        "folder": "all",
        "health": "ok",
        "last_error": "a long error message that may wrap over lines",
    },
    {"mailbox": "x@contoso.example", "folder": "inbox", "health": "failing", "last_error": None},
]


def printed(width: int) -> list[str]:
    text = io.StringIO()
    print_fitted(Console(width=width, file=text), "t", COLUMNS, ROWS)
    return text.getvalue().splitlines()


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_identifiers_stay_on_one_line_whatever_the_width(width: int) -> None:
    lines = printed(width)
    for row in ROWS:
        assert sum(str(row["mailbox"]) in line for line in lines) == 1


def test_a_narrow_terminal_drops_the_least_important_columns_first() -> None:
    headers = {
        width: next(line for line in printed(width) if "mailbox" in line) for width in (60, 80, 200)
    }
    assert "health" in headers[60] and "last error" not in headers[60]
    assert "last error" in headers[80] and "folder" not in headers[80]
    assert all(h in headers[200] for h in ("folder", "health", "last error"))
    assert all(len(line) <= 80 for line in printed(80))
