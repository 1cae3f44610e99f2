"""Attachment listing and downloads over httpx.MockTransport: kinds, retries, the cap."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator

import httpx
import pytest

from mailsync.errors import BadDataError, GraphServerError, NotFoundError
from mailsync.graph.attachments import download, list_attachments, parse_attachment
from mailsync.graph.client import GraphClient
from mailsync.sync.attachments import TooLargeError, is_permanent, spool_content

BASE = "https://graph.test"


def client(handle: Callable[[httpx.Request], httpx.Response], retries: int = 3) -> GraphClient:
    http = httpx.Client(transport=httpx.MockTransport(handle))
    return GraphClient(http, base_url=BASE, max_retries=retries, sleep=lambda _: None)


def test_the_list_asks_for_metadata_only_and_reads_each_kind() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        value = [
            {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "id": "a+1/=",
                "size": 10,
                "isInline": True,
                "contentId": "logo@x",
            },
            {"@odata.type": "#microsoft.graph.itemAttachment", "id": "a2", "contentType": None},
            {"@odata.type": "#microsoft.graph.referenceAttachment", "id": "a3"},
        ]
        return httpx.Response(200, json={"value": value})

    listed = list_attachments(client(handle), "ada@contoso.example", "m+1/=")

    assert [(a.kind, a.graph_attachment_id) for a in listed] == [
        ("file", "a+1/="),
        ("item", "a2"),
        ("reference", "a3"),
    ]
    assert listed[0].is_inline and listed[0].content_id == "logo@x" and listed[0].graph_size == 10
    request = seen[0]
    assert request.url.raw_path.startswith(b"/v1.0/users/ada@contoso.example/messages/m%2B1%2F%3D/")
    assert "contentBytes" not in request.url.params["$select"]
    assert "$expand" not in request.url.params


@pytest.mark.parametrize(
    "raw", [{"id": "x"}, {"@odata.type": "#microsoft.graph.fileAttachment"}, "text"]
)
def test_an_attachment_without_id_or_type_is_bad_data(raw: object) -> None:
    with pytest.raises(BadDataError):
        parse_attachment(raw)


def test_a_download_is_retried_from_its_first_byte() -> None:
    answers = iter(
        [
            httpx.Response(503, json={"error": {"code": "x"}}),
            httpx.Response(200, content=b"abc" * 1000),
        ]
    )
    spool = io.BytesIO()
    graph = client(lambda request: next(answers))

    digest, size = download(
        graph, "ada", "m", "a", lambda chunks: spool_content(chunks, spool, 10_000)
    )

    assert size == 3000 and spool.getvalue() == b"abc" * 1000
    assert digest == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert graph.api_calls == 2


def test_past_its_retries_a_download_fails_transient_and_a_404_permanent() -> None:
    graph = client(lambda request: httpx.Response(503, json={}), retries=1)
    with pytest.raises(GraphServerError) as server:
        download(graph, "ada", "m", "a", lambda chunks: b"".join(chunks))
    assert not is_permanent(server.value)
    missing = client(
        lambda request: httpx.Response(404, json={"error": {"code": "ErrorItemNotFound"}})
    )
    with pytest.raises(NotFoundError) as gone:
        download(missing, "ada", "m", "a", lambda chunks: b"".join(chunks))
    assert is_permanent(gone.value)
    assert missing.api_calls == 1  # a 404 is not retried


def test_content_over_the_cap_stops_the_read() -> None:
    with pytest.raises(TooLargeError):
        spool_content(iter([b"x" * 600, b"x" * 600]), io.BytesIO(), 1000)


class BreaksOff(httpx.SyncByteStream):
    """A body that ends in a connection reset after its first bytes."""

    def __iter__(self) -> Iterator[bytes]:
        yield b"abc"
        raise httpx.ReadError("connection reset by peer")


def test_a_body_that_breaks_off_is_asked_again_streamed_or_whole() -> None:
    """One retry loop (GraphClient.send) serves downloads and JSON alike: a body cut off
    while it is read is a network error like any other, retried from its first byte."""
    answers = iter([httpx.Response(200, stream=BreaksOff()), httpx.Response(200, content=b"xyz")])
    spool = io.BytesIO()
    graph = client(lambda request: next(answers))

    _, size = download(graph, "ada", "m", "a", lambda chunks: spool_content(chunks, spool, 100))

    assert (size, spool.getvalue(), graph.api_calls) == (3, b"xyz", 2)
    pages = iter([httpx.Response(200, stream=BreaksOff()), httpx.Response(200, json={"v": 1})])
    paging = client(lambda request: next(pages))
    assert paging.get_json(f"{BASE}/v1.0/users/ada/messages") == {"v": 1}
    assert paging.api_calls == 2
