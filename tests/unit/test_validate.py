from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import unquote

import httpx
import pytest

from mailsync import validate
from mailsync.errors import InvalidInputError
from mailsync.graph.client import GraphClient

GOOD_MAILBOXES = [
    "user@contoso.com",
    "first.last@sub.contoso.co.uk",
    "o'brien@contoso.com",
    "support+billing@contoso.com",
    "mary-jane@contoso.com",
    "a.b.c.d@contoso.com",
    "007@contoso.com",
    "x_contoso.com#EXT#@contoso.onmicrosoft.com",  # a guest's UPN
    "!#$%&'*+=?^_`{|}~-@contoso.com",  # every atext character but '/'
    "x%2F@contoso.com",  # a literal '%2F': encoded as %252F, never a slash
    "what?no@contoso.com",
    "a@xn--bcher-kva.example",  # an internationalised domain, as DNS spells it
    "l" * 64 + "@" + "d" * 63 + ".example",
    "0f6c2a52-7b0e-4d7e-9a58-2b1c1f0e9d11",
    "0F6C2A52-7B0E-4D7E-9A58-2B1C1F0E9D11",
]

BAD_MAILBOXES = [
    ("", "it is empty"),
    ("   ", "it is empty"),
    ("nobody", "no local part"),
    ("@contoso.com", "no local part"),
    ("nobody@", "no local part"),
    ("a/b@contoso.com", "a '/'"),
    ("a\\b@contoso.com", "a '\\'"),
    ("../x@contoso.com", "a '/'"),
    ("x@contoso..com", "an empty part"),
    ("a..b@contoso.com", "an empty part"),
    (".a@contoso.com", "an empty part"),
    ("a.@contoso.com", "an empty part"),
    ("x y@contoso.com", "whitespace"),
    ("x\ty@contoso.com", "whitespace"),
    ("x\u00a0y@contoso.com", "whitespace"),
    ("x\x00y@contoso.com", "a control character"),
    ("x\x1b[2Jy@contoso.com", "a control character"),
    ('x"@contoso.com', "a double quote"),
    ('"x y"@contoso.com', "whitespace"),
    ("x'; DROP TABLE emails;--@c.com", "whitespace"),
    ("x;y@contoso.com", "';'"),
    ("x,y@contoso.com", "','"),
    ("<x@contoso.com>", "'<'"),
    ("x@y@contoso.com", "'@'"),
    ("(comment)x@contoso.com", "'('"),
    ("josé@contoso.com", "'é'"),
    ("x@contoso", "invalid domain"),
    ("x@-contoso.com", "invalid domain"),
    ("x@contoso.com/messages", "a '/'"),
    ("x@contoso.com?$top=1", "invalid domain"),
    ("x@[127.0.0.1]", "invalid domain"),
    ("l" * 65 + "@contoso.com", "longer than 64"),
    ("x@" + "d" * 64 + ".example", "invalid domain"),
    ("x@" + ".".join(["d" * 60] * 5) + ".example", "longer than 254"),
    ("$admin@contoso.com", "starts with '$'"),
]


@pytest.mark.parametrize("good", GOOD_MAILBOXES)
def test_every_address_exchange_accepts_passes(good: str) -> None:
    assert validate.mailbox(good) == good
    assert validate.mailbox(f"  {good}\n") == good  # surrounding whitespace is not the address


@pytest.mark.parametrize(("bad", "reason"), BAD_MAILBOXES, ids=repr)
def test_what_cannot_be_an_address_is_refused_saying_why(bad: str, reason: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid mailbox") as refused:
        validate.mailbox(bad)
    assert reason in str(refused.value)
    assert "\x00" not in str(refused.value) and "\x1b" not in str(refused.value)  # shown escaped
    assert len(str(refused.value)) < 250  # a long value is cut, the line stays readable


@pytest.mark.parametrize("good", GOOD_MAILBOXES)
def test_an_accepted_mailbox_is_exactly_one_segment_of_its_graph_urls(good: str) -> None:
    with httpx.Client() as http:
        graph = GraphClient(http, base_url="https://graph.example")
        url = graph.messages_url(good, "inbox")
    parts = httpx.URL(url)
    assert (parts.host, parts.query, parts.fragment) == ("graph.example", b"", "")
    segments = parts.raw_path.decode().split("/")
    assert segments[:3] == ["", "v1.0", "users"] and segments[4:] == [
        "mailFolders",
        "inbox",
        "messages",
    ]
    assert unquote(segments[3]) == good  # the server decodes it back to the address, once


def test_graph_urls_encode_the_characters_of_real_addresses() -> None:
    encoded = {
        "o'brien@contoso.com": "o%27brien@contoso.com",
        "support+billing@contoso.com": "support%2Bbilling@contoso.com",
        "x_c.com#EXT#@t.example": "x_c.com%23EXT%23@t.example",
        "x%2F@contoso.com": "x%252F@contoso.com",
    }
    with httpx.Client() as http:
        graph = GraphClient(http, base_url="https://graph.example")
        for mailbox, segment in encoded.items():
            url = graph.messages_url(mailbox, "inbox")
            assert url == f"https://graph.example/v1.0/users/{segment}/mailFolders/inbox/messages"


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
