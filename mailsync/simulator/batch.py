"""``POST /v1.0/$batch``: Graph's JSON batching, for the requests mailsync batches (GETs).

As Graph documents it (research notes ``attachments-and-batching.md`` §3): at most 20
requests, each with a unique ``id``, a ``method`` and a **relative** ``url`` (made absolute
on the batch's own version, ``/v1.0``), and optional ``headers`` (``Prefer`` is per item:
the envelope's is not inherited). The envelope answers 200 whenever the batch parses (400
when it does not: too many items, a duplicate id, an absolute url); each item carries its
own ``status``, ``headers`` and JSON ``body``, and items may come back in any order (here:
shuffled by completion). Each item is served as if sent alone: the outer request's bearer
token, the per-mailbox limits (``limits``: a 429 for one item carries its own
``Retry-After`` in its headers), injected faults. Like Outlook, up to 4 items run at once.
``dependsOn`` is not simulated (400).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from mailsync.simulator.wire import GraphFailure, Request, Response

MAX_BATCH_REQUESTS = 20
PARALLEL_ITEMS = 4  # Outlook runs up to four of an unordered batch's requests at a time

Serve = Callable[[Request, list[str]], Response]  # one request, its path segments


def _invalid(message: str) -> GraphFailure:
    return GraphFailure(400, "BadRequest", f"Invalid batch payload format: {message}")


def parse_items(body: bytes) -> list[dict[str, Any]]:
    """The batch's requests, checked as Graph checks them."""
    try:
        payload = orjson.loads(body or b"null")
    except orjson.JSONDecodeError:
        raise _invalid("the body is not JSON") from None
    items = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items:
        raise _invalid("'requests' must be a non-empty array")
    if len(items) > MAX_BATCH_REQUESTS:
        raise _invalid(f"a batch holds at most {MAX_BATCH_REQUESTS} requests, not {len(items)}")
    ids: set[str] = set()
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise _invalid("every request needs a string 'id'")
        if item["id"] in ids:
            raise _invalid(f"the id {item['id']!r} is used twice")
        ids.add(item["id"])
        url = item.get("url")
        if not isinstance(url, str) or not url.startswith("/") or url.startswith("//"):
            raise _invalid(f"request {item['id']}: the url must be relative ('/users/…')")
        if str(item.get("method", "")).upper() != "GET":
            raise _invalid(f"request {item['id']}: only GET is simulated in a batch")
        if "dependsOn" in item:
            raise _invalid("dependsOn is not simulated")
        if not isinstance(item.get("headers", {}), dict):
            raise _invalid(f"request {item['id']}: headers must be an object")
    return items


def _embedded(body: bytes) -> bytes:
    """An item's body inside the envelope: JSON as it is; anything else (a malformed page
    fault) base64-encoded in a string, as OData batches carry non-JSON bodies."""
    try:
        orjson.loads(body or b"null")
    except orjson.JSONDecodeError:
        return json.dumps(base64.b64encode(body).decode("ascii")).encode()
    return body or b"null"


def serve_batch(
    request: Request, serve: Serve, error: Callable[[GraphFailure], Response]
) -> tuple[Response, list[tuple[int, list[str], str]]]:
    """The envelope, and (status, segments, query) of each item (for the statistics)."""
    items = parse_items(request.body)
    auth = request.headers.get("authorization", "")

    def run(item: dict[str, Any]) -> tuple[dict[str, Any], Response, list[str], str]:
        parts = urlsplit("/v1.0" + item["url"])
        headers = {k.lower(): str(v) for k, v in item.get("headers", {}).items()}
        sub = Request(
            method="GET",
            path=parts.path,
            query=parts.query,
            headers={**headers, "authorization": auth},
            body=b"",
            base_url=request.base_url,
        )
        segments = [unquote(s) for s in parts.path.split("/") if s]
        try:
            answer = serve(sub, segments[1:])
        except GraphFailure as failure:
            answer = error(failure)
        return item, answer, segments, parts.query

    parts: list[bytes] = []
    seen: list[tuple[int, list[str], str]] = []
    with ThreadPoolExecutor(max_workers=PARALLEL_ITEMS) as pool:
        for future in as_completed([pool.submit(run, item) for item in items]):
            item, answer, segments, query = future.result()
            seen.append((answer.status, segments, query))
            head = {"id": item["id"], "status": answer.status, "headers": answer.headers}
            encoded = json.dumps(head).encode()
            parts.append(encoded[:-1] + b',"body":' + _embedded(answer.body) + b"}")
    return Response(200, b'{"responses":[' + b",".join(parts) + b"]}"), seen
