"""The typed decode of a page (mailsync.graph.wire) against the general parse: the
same records, content hashes included, for every shape Graph sends; None, so that the
general parse judges, for anything else."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from mailsync.errors import BadDataError
from mailsync.graph.client import GraphClient
from mailsync.graph.delta import DeltaPage, _links, fetch_page, page_from_body
from mailsync.graph.messages import parse_message
from mailsync.graph.wire import decode_page

BASE = "https://graph.test"
NEXT = f"{BASE}/v1.0/users/u/mailFolders/f/messages/delta?$skiptoken=abc"
GRAPH = GraphClient(httpx.Client(), base_url=BASE)


def party(rng: random.Random) -> Any:
    return rng.choice(
        [
            {"emailAddress": {"name": "Zoë Ølsen", "address": "zoe@contoso.example"}},
            {"emailAddress": {"address": "x@contoso.example"}},
            {"emailAddress": {"name": None, "address": None}},
            {"emailAddress": {}},
            {"emailAddress": None},
            {},
        ]
    )


def message(i: int, rng: random.Random, *, with_attachments: bool = False) -> dict[str, Any]:
    """A message as Graph sends it, each optional field present, null, empty or absent."""
    full: dict[str, Any] = {
        "@odata.etag": 'W/"CQAAAB"',
        "id": f"AAMk-{i}",
        "receivedDateTime": f"2024-01-{1 + i % 28:02d}T10:00:{i % 60:02d}Z",
        "sentDateTime": rng.choice(["2024-01-01T09:59:00Z", "", None]),
        "internetMessageId": f"<{i}@contoso.example>",
        "conversationId": f"conv-{i % 7}",
        "subject": rng.choice(["Re: naïve café — 📎", "", None, 'quote " and \\ back']),
        "sender": party(rng),
        "from": party(rng),
        "toRecipients": [party(rng) for _ in range(rng.randrange(4))],
        "ccRecipients": rng.choice([[], None, [party(rng)]]),
        "body": rng.choice(
            [
                {"contentType": "html", "content": "<p>İstanbul cid:part1 \u2028 \x00</p>"},
                {"contentType": "text", "content": "plain"},
                {"contentType": "html"},
                {},
                None,
            ]
        ),
        "bodyPreview": "preview",
        "hasAttachments": rng.choice([True, False, None]),
        "isRead": rng.choice([True, False, None]),
        "importance": rng.choice(["normal", "high", None]),
        "parentFolderId": "folder-1",
        "categories": rng.choice([[], ["Red category", "Ünïcode"], None]),
        "flag": {"flagStatus": "notFlagged"},  # a field we do not store: skipped
    }
    if with_attachments:  # never asked for (no $expand): the general parse's
        full["attachments"] = [
            {"id": "att-1", "name": "a.pdf", "contentType": "application/pdf", "size": 10},
            {"id": "att-2", "isInline": True, "size": None},
            {"id": "", "name": "no id: dropped"},
        ]
    for key in list(full):
        if key not in {"id", "receivedDateTime"} and rng.random() < 0.1:
            del full[key]
    return full


def both(body: dict[str, Any]) -> tuple[DeltaPage | None, DeltaPage]:
    raw = orjson.dumps(body)
    fast = decode_page(raw)
    general = page_from_body(GRAPH, orjson.loads(raw))
    if fast is None:
        return None, general
    return DeltaPage(fast.messages, fast.removed_ids, [], *_links(GRAPH, fast.links)), general


@pytest.mark.parametrize("seed", range(20))
def test_the_typed_decode_gives_the_general_parses_records(seed: int) -> None:
    rng = random.Random(seed)
    value: list[dict[str, Any]] = [message(i, rng) for i in range(60)]
    value.insert(7, {"id": "gone-1", "@removed": {"reason": "deleted"}})
    value.insert(20, {"id": "gone-2", "@removed": None})
    body: dict[str, Any] = {"value": value}
    body["@odata.nextLink" if seed % 2 else "@odata.deltaLink"] = NEXT
    fast, general = both(body)
    assert fast is not None
    assert fast == general  # every field, the content hash, the attachments, the links
    assert fast.removed_ids == ["gone-1", "gone-2"]
    assert len(fast.messages) == 60


def off(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    rng = random.Random(1)
    body: dict[str, Any] = {"value": [message(i, rng) for i in range(5)], "@odata.deltaLink": NEXT}
    change(body)
    return body


def set_in(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        target = body["value"][2]
        *parents, last = path.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value

    return change


# What the general parse makes of each: the message counted failed, the message stored
# (a value it tolerates), or the page refused.
FAILED, STORED, PAGE = "failed", "stored", "page"
OFF_SHAPE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "no receivedDateTime": (set_in("receivedDateTime", None), FAILED),
    "a receivedDateTime that is no time": (set_in("receivedDateTime", "yesterday"), FAILED),
    "an empty id": (set_in("id", ""), FAILED),
    "a numeric subject": (set_in("subject", 42), FAILED),
    "a body content that is a list": (set_in("body.content", ["x"]), FAILED),
    "isRead as a string": (set_in("isRead", "yes"), STORED),
    "hasAttachments as a number": (set_in("hasAttachments", 1), STORED),
    "a body that is a string": (set_in("body", "text"), FAILED),
    "a recipient that is not an object": (set_in("toRecipients", ["x@contoso.example"]), STORED),
    "recipients that are an object": (set_in("toRecipients", {"a": 1}), FAILED),
    "a category that is a number": (set_in("categories", ["ok", 3]), FAILED),
    "a sender address that is a number": (set_in("sender.emailAddress.address", 7), FAILED),
    "an emailAddress that is a string": (set_in("from.emailAddress", "x@contoso.example"), FAILED),
    "an attachment size that is a string": (
        set_in("attachments", [{"id": "a", "size": "1"}]),
        STORED,
    ),
    "an item that is not an object": (lambda body: body["value"].append("text"), FAILED),
    "no value list": (lambda body: body.update(value={"a": 1}), PAGE),
}


@pytest.mark.parametrize("name", OFF_SHAPE)
def test_a_page_off_the_shape_goes_to_the_general_parse(name: str) -> None:
    change, outcome = OFF_SHAPE[name]
    body = off(change)
    assert decode_page(orjson.dumps(body)) is None
    if outcome == PAGE:
        with pytest.raises(BadDataError):
            page_from_body(GRAPH, body)
        return
    page = page_from_body(GRAPH, body)
    odd = body["value"][-1] if name == "an item that is not an object" else body["value"][2]
    odd_id = odd["id"] if isinstance(odd, dict) else "?"
    if outcome == FAILED:
        assert page.failed_ids == [odd_id]
        assert odd_id not in {m.graph_id for m in page.messages}
    else:
        assert page.failed_ids == [] and odd_id in {m.graph_id for m in page.messages}
    assert len(page.messages) + len(page.failed_ids) == len(body["value"])


def test_attachments_inline_take_the_general_parse() -> None:
    rng = random.Random(3)
    body = {"value": [message(i, rng, with_attachments=i == 2) for i in range(5)]}
    body["@odata.deltaLink"] = NEXT
    assert decode_page(orjson.dumps(body)) is None
    page = page_from_body(GRAPH, body)
    assert [a.graph_attachment_id for a in page.messages[2].attachments] == ["att-1", "att-2"]


def test_json_nested_deeper_than_the_decoder_goes_takes_the_general_parse() -> None:
    """msgspec stops near 1,000 levels with RecursionError; the page goes to the general
    parse, which reads it (orjson's limit is 1,024), or names it bad beyond that."""
    for depth, readable in ((1000, True), (1100, False)):
        raw = orjson.dumps(off(lambda b: None)).replace(
            b'"value":[', b'"zz":' + b"[" * depth + b"]" * depth + b',"value":[', 1
        )
        assert decode_page(raw) is None
        if readable:
            assert len(page_from_body(GRAPH, GRAPH.decode(raw)).messages) == 5
        else:
            with pytest.raises(BadDataError, match="not valid JSON"):
                GRAPH.decode(raw)


def test_a_bad_message_fails_alone_not_its_page() -> None:
    """What the fallback keeps: one message without a time is counted failed, the others
    are stored, exactly as before the typed decode."""
    body = off(set_in("receivedDateTime", None))
    assert decode_page(orjson.dumps(body)) is None
    page = page_from_body(GRAPH, body)
    assert page.failed_ids == [body["value"][2]["id"]]
    assert len(page.messages) == 4


@pytest.mark.parametrize(
    "raw",
    [
        b'{"value": [{"id": "a", "receivedDateTime": "2024-01-01T00:00:00Z"}',  # cut in half
        b'{"value": [{"id": "a", "subject": "\\ud800"}]}',  # a lone surrogate
        b"\xef\xbb\xbf{}",  # a byte order mark
        b"[]",
    ],
)
def test_bytes_that_are_not_a_page_go_to_the_general_parse(raw: bytes) -> None:
    assert decode_page(raw) is None
    with pytest.raises(BadDataError):
        page_from_body(GRAPH, GRAPH.decode(raw))


def fetched(body: dict[str, Any]) -> DeltaPage:
    """The page as ``fetch_page`` reads it off a response (a tiny Graph over httpx)."""
    raw = orjson.dumps(body)
    graph = GraphClient(
        httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200, content=raw))),
        base_url=BASE,
    )
    return fetch_page(graph, NEXT, 500)


def test_fetch_page_takes_the_typed_path_and_the_general_one_alike() -> None:
    shaped, bad = off(lambda b: None), off(set_in("receivedDateTime", None))
    assert fetched(shaped) == page_from_body(GRAPH, shaped)
    page = fetched(bad)
    assert page.failed_ids == [bad["value"][2]["id"]] and len(page.messages) == 4


def test_a_link_off_the_graph_host_is_refused_on_the_typed_path_too() -> None:
    body = off(lambda b: b.update({"@odata.deltaLink": "https://evil.example/x"}))
    assert decode_page(orjson.dumps(body)) is not None
    with pytest.raises(BadDataError, match="not a link to"):
        fetched(body)


@pytest.mark.parametrize("seed", range(5))
def test_a_windows_listed_page_gets_the_general_parses_items(seed: int) -> None:
    """The keyset listing (``GraphClient.listed``) takes the typed decode too: the same
    records, with the times Graph sent, as the general parse gives message by message."""
    rng = random.Random(seed)
    body: dict[str, Any] = {"value": [message(i, rng) for i in range(40)], "@odata.nextLink": NEXT}
    listed = GRAPH.listed(orjson.dumps(body))
    assert listed.items == [(parse_message(m), m["receivedDateTime"]) for m in body["value"]]
    assert listed.links == {"@odata.nextLink": NEXT}


def test_a_null_next_link_is_kept_as_sent() -> None:
    """Sent as null, a nextLink is still a key of the page, as the general parse sees it:
    the listing asks once more rather than call the window done."""
    body = {"value": [message(1, random.Random(1))], "@odata.nextLink": None}
    assert GRAPH.listed(orjson.dumps(body)).links == {"@odata.nextLink": None}
    fast = decode_page(orjson.dumps(body))
    assert fast is not None and fast.links == {"@odata.nextLink": None}
