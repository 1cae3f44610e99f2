"""The Graph client's logic over httpx.MockTransport: paging, ties, retries, error mapping."""

from __future__ import annotations

import gc
import json
import weakref
from typing import Any

import httpx
import pytest

from mailsync.errors import (
    BadDataError,
    BadRequestError,
    GraphServerError,
    NotFoundError,
    PermissionDeniedError,
    ThrottledError,
)
from mailsync.graph.client import Cursor, GraphClient
from mailsync.graph.messages import parse_message


def msg(i: int, ts: str) -> dict[str, Any]:
    return {
        "id": f"id-{i}",
        "receivedDateTime": ts,
        "subject": f"s{i}",
        "body": {"contentType": "html", "content": "<p>x</p>"},
    }


def keyset_server(
    messages: list[dict[str, Any]], calls: list[httpx.Request]
) -> httpx.MockTransport:
    """A tiny Graph: 'ge' filter, ascending order, $top, a nextLink with $skip."""

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        params = request.url.params
        since = params["$filter"].split(" ge ")[1].split(" ")[0]
        matching = [m for m in messages if m["receivedDateTime"] >= since]
        skip, top = int(params.get("$skip", 0)), int(params["$top"])
        body: dict[str, Any] = {"value": matching[skip : skip + top]}
        if skip + top < len(matching):
            body["@odata.nextLink"] = str(request.url.copy_merge_params({"$skip": skip + top}))
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handle)


def client(transport: httpx.MockTransport, **kw: Any) -> GraphClient:
    return GraphClient(
        httpx.Client(transport=transport), base_url="https://graph.test", sleep=lambda s: None, **kw
    )


def collect(graph: GraphClient, page_size: int) -> list[str]:
    ids: list[str] = []
    for page in graph.iter_pages(
        "u@contoso.com", "inbox", cursor=Cursor(), since=None, until=None, page_size=page_size
    ):
        ids.extend(m.graph_id for m in page.messages)
    return ids


def test_keyset_pages_return_each_message_once_across_ties() -> None:
    times = [f"2024-01-01T00:00:0{i // 3}Z" for i in range(10)]  # runs of 3 ties
    messages = [msg(i, t) for i, t in enumerate(times)]
    calls: list[httpx.Request] = []
    ids = collect(client(keyset_server(messages, calls)), page_size=4)
    assert ids == [m["id"] for m in messages]
    assert all(c.headers["Prefer"] == 'IdType="ImmutableId"' for c in calls)


def test_a_tie_run_longer_than_a_page_follows_the_next_link() -> None:
    messages = [msg(i, "2024-01-01T00:00:00Z") for i in range(7)] + [msg(7, "2024-01-01T00:00:09Z")]
    calls: list[httpx.Request] = []
    ids = collect(client(keyset_server(messages, calls)), page_size=3)
    assert ids == [m["id"] for m in messages]
    assert any("$skip" in str(c.url) or "%24skip" in str(c.url) for c in calls)


def test_429_waits_retry_after_then_succeeds() -> None:
    slept: list[float] = []
    answers = iter(
        [
            httpx.Response(
                429, headers={"Retry-After": "3"}, json={"error": {"code": "TooManyRequests"}}
            ),
            httpx.Response(200, json={"@odata.count": 5, "value": []}),
        ]
    )
    graph = GraphClient(
        httpx.Client(transport=httpx.MockTransport(lambda r: next(answers))),
        base_url="https://graph.test",
        sleep=slept.append,
    )
    assert graph.count_messages("u@contoso.com", "inbox", None, None) == 5
    assert slept == [3.0] and graph.api_calls == 2 and graph.throttled == 1


def test_throttling_that_never_ends_raises_throttled_with_retry_after() -> None:
    transport = httpx.MockTransport(
        lambda r: httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"code": "x"}})
    )
    with pytest.raises(ThrottledError) as caught:
        client(transport, max_retries=2).count_messages("u@contoso.com", "inbox", None, None)
    assert caught.value.retry_after_s == 7.0 and caught.value.retryable


def test_backoff_without_retry_after_is_bounded_and_jittered() -> None:
    slept: list[float] = []
    transport = httpx.MockTransport(lambda r: httpx.Response(503, json={"error": {"code": "x"}}))
    graph = GraphClient(
        httpx.Client(transport=transport),
        base_url="https://graph.test",
        max_retries=5,
        backoff_base_s=1.0,
        backoff_max_s=4.0,
        sleep=slept.append,
    )
    with pytest.raises(GraphServerError):
        graph.count_messages("u@contoso.com", "inbox", None, None)
    assert len(slept) == 5
    for attempt, delay in enumerate(slept):
        cap = min(4.0, 2**attempt)
        assert cap / 2 <= delay <= cap


@pytest.mark.parametrize(
    ("status", "kind"), [(400, BadRequestError), (403, PermissionDeniedError), (404, NotFoundError)]
)
def test_errors_map_to_categories(status: int, kind: type[Exception]) -> None:
    transport = httpx.MockTransport(
        lambda r: httpx.Response(
            status,
            json={
                "error": {"code": "ErrorInvalidUser", "message": "The requested user is invalid."}
            },
        )
    )
    with pytest.raises(kind, match="ErrorInvalidUser"):
        client(transport).count_messages("u@contoso.com", "inbox", None, None)


def test_malformed_json_is_bad_data() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=b'{"value": [{"id": "a"'))
    with pytest.raises(BadDataError, match="not valid JSON"):
        collect(client(transport), page_size=10)


def test_a_message_without_a_received_time_is_counted_failed_not_stored() -> None:
    body = {
        "value": [msg(1, "2024-01-01T00:00:00Z"), {"id": "broken"}, msg(2, "2024-01-01T00:00:01Z")]
    }
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=body))
    page = next(
        client(transport).iter_pages(
            "u@contoso.com", "inbox", cursor=Cursor(), since=None, until=None, page_size=10
        )
    )
    assert [m.graph_id for m in page.messages] == ["id-1", "id-2"]
    assert page.failed_ids == ["broken"] and page.exhausted


def test_content_hash_changes_only_with_stored_fields() -> None:
    a = parse_message(msg(1, "2024-01-01T00:00:00Z"))
    b = parse_message({**msg(1, "2024-01-01T00:00:00Z"), "unrelated": 1})
    c = parse_message({**msg(1, "2024-01-01T00:00:00Z"), "subject": "changed"})
    assert a.content_hash == b.content_hash != c.content_hash
    assert json.loads(a.to_recipients) == []


@pytest.mark.parametrize(
    ("link", "served"),
    [
        ("https://graph.test/v1.0/users/a/messages/delta?$deltatoken=x", True),
        ("https://GRAPH.test:443/v1.0/users/a/messages/delta", True),  # the same origin, parsed
        ("https://graph.test.evil.example/v1.0/users/a", False),
        ("https://graph.test@evil.example/v1.0/users/a", False),
        ("https://graph.test:8443/v1.0/users/a", False),
        ("http://graph.test/v1.0/users/a", False),
    ],
)
def test_a_link_is_served_only_on_the_clients_own_origin(link: str, served: bool) -> None:
    graph = client(httpx.MockTransport(lambda request: httpx.Response(500)))
    assert graph.serves(link) is served


def test_a_read_answer_is_freed_without_the_garbage_collector() -> None:
    """A page's response (megabytes) goes as soon as its last use ends: httpx's response and
    its stream refer to each other, and ``send`` breaks that cycle once the body is read."""
    answers: list[weakref.ref[httpx.Response]] = []

    def read(response: httpx.Response) -> bytes:
        answers.append(weakref.ref(response))
        return response.read()

    graph = client(httpx.MockTransport(lambda request: httpx.Response(200, content=b"x" * 1000)))
    request = graph.http.build_request("GET", "https://graph.test/v1.0/users/a/messages")
    enabled = gc.isenabled()
    gc.disable()
    try:
        assert graph.send(request, read) == b"x" * 1000
        assert answers[0]() is None
    finally:
        if enabled:
            gc.enable()
