"""Requests, responses and Graph's error shape: the values every route handler speaks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

JSON_TYPE = "application/json"
# Graph sends raw UTF-8, compact.
ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    base_url: str  # scheme://host[:port] as the client addressed us


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    # A large body (an attachment's $value): sent chunk by chunk, ``length`` bytes in all.
    stream: Iterator[bytes] | None = None
    length: int = 0


class GraphFailure(Exception):
    """An error answer in Graph's shape: {"error": {"code", "message", "innerError"}}."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad_request(message: str, code: str = "BadRequest") -> GraphFailure:
    return GraphFailure(400, code, message)


def item_not_found() -> GraphFailure:
    message = "The specified object was not found in the store."
    return GraphFailure(404, "ErrorItemNotFound", message)


def segment_not_found(segments: list[str]) -> GraphFailure:
    return bad_request(f"Resource not found for the segment '{'/'.join(segments)}'.")


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, ENCODER.encode(obj).encode("utf-8"), dict(headers or {}))


def graph_error_response(failure: GraphFailure, request_id: str) -> Response:
    inner = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id,
        "client-request-id": request_id,
    }
    obj = {"error": {"code": failure.code, "message": failure.message, "innerError": inner}}
    return json_response(failure.status, obj, failure.headers)


def format_seconds(value: float) -> str:
    """Retry-After as Graph writes it: whole seconds as an integer."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
