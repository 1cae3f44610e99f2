from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailsync import validate
from mailsync.errors import InvalidInputError


@pytest.mark.parametrize(
    "good",
    ["user@contoso.com", "first.last@sub.contoso.co.uk", "0f6c2a52-7b0e-4d7e-9a58-2b1c1f0e9d11"],
)
def test_good_mailboxes_pass(good: str) -> None:
    assert validate.mailbox(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "nobody",
        "a/b@contoso.com",
        "../x@contoso.com",
        "x@contoso..com",
        "x%2F@contoso.com",
        "x'; DROP TABLE emails;--@c.com",
        'x"@contoso.com',
        "x y@contoso.com",
    ],
)
def test_bad_mailboxes_are_refused_with_a_clear_message(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid mailbox"):
        validate.mailbox(bad)


@pytest.mark.parametrize("bad", ["in/box", "..", "inbox?x=1", "a%2Fb", ""])
def test_bad_folders_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid folder"):
        validate.folder(bad)


def test_dates_become_aware_utc() -> None:
    assert validate.timestamp("2024-02-01", "x") == datetime(2024, 2, 1, tzinfo=UTC)
    assert validate.timestamp("2024-02-01T10:00:00+02:00", "x") == datetime(
        2024, 2, 1, 8, tzinfo=UTC
    )


def test_an_inverted_range_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="not before"):
        validate.date_range("2024-03-01", "2024-02-01")
    with pytest.raises(InvalidInputError, match="invalid --from date"):
        validate.date_range("yesterday", None)
