"""The simulator's own control API under ``/_sim``: faults, stats, tokens, mailboxes.

It steers a simulator in another process (``mailsync simulator``, the bench) as the
in-process attributes steer one in a test. Admin requests are never counted in the stats.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from mailsync.simulator.faults import Faults, Stats
from mailsync.simulator.store import Mailbox
from mailsync.simulator.wire import GraphFailure, Request, Response, bad_request, json_response


class Controls(Protocol):
    """What the admin API steers (the GraphSimulator)."""

    faults: Faults
    stats: Stats

    def add_mailbox(self, user: str, count: int, seed: int = 0, folder: str = "inbox") -> Mailbox:
        raise NotImplementedError

    def mailbox(self, user: str) -> Mailbox:
        raise NotImplementedError

    def mailboxes(self) -> list[Mailbox]:
        raise NotImplementedError

    def expire_all_tokens(self) -> None:
        raise NotImplementedError


class AdminApi:
    def __init__(self, controls: Controls) -> None:
        self._controls = controls

    def route(self, request: Request, segments: list[str]) -> Response:
        """``segments`` are the path after ``/_sim``."""
        controls = self._controls
        route = (request.method, "/".join(segments[:1]), len(segments))
        if route == ("GET", "stats", 1):
            return json_response(200, controls.stats.as_dict())
        if request.method == "POST" and segments == ["stats", "reset"]:
            controls.stats.reset()
            return json_response(200, controls.stats.as_dict())
        if route == ("GET", "faults", 1):
            return json_response(200, controls.faults.as_dict())
        if route == ("POST", "faults", 1):
            return self._set_faults(request)
        if request.method == "POST" and segments == ["faults", "reset"]:
            controls.faults.reset()
            return json_response(200, controls.faults.as_dict())
        if request.method == "POST" and segments == ["tokens", "expire"]:
            controls.expire_all_tokens()
            return json_response(200, {"expired": True})
        if route == ("POST", "mailboxes", 1):
            return self._add_mailbox(request)
        if route == ("GET", "mailboxes", 1):
            return json_response(200, {"value": [m.summary() for m in controls.mailboxes()]})
        if route == ("GET", "mailboxes", 2):
            return self._mailbox(segments[1])
        raise GraphFailure(404, "NotFound", f"No admin resource {request.method} {request.path}.")

    def _set_faults(self, request: Request) -> Response:
        try:
            changes = json.loads(request.body or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of Faults fields")
            self._controls.faults.update(changes)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        return json_response(200, self._controls.faults.as_dict())

    def _add_mailbox(self, request: Request) -> Response:
        try:
            spec = json.loads(request.body or b"{}")
            mailbox = self._controls.add_mailbox(
                str(spec["user"]),
                int(spec["count"]),
                int(spec.get("seed", 0)),
                str(spec.get("folder", "inbox")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise bad_request(f"Cannot add mailbox: {exc!r}") from None
        return json_response(201, mailbox.summary())

    def _mailbox(self, user: str) -> Response:
        try:
            mailbox = self._controls.mailbox(user)
        except KeyError:
            raise GraphFailure(404, "ErrorInvalidUser", f"No mailbox {user!r}.") from None
        summary: dict[str, Any] = mailbox.summary()
        summary["ids"] = sorted(mailbox.ids())
        summary["added_ids"] = sorted(mailbox.added_ids)
        summary["deleted_ids"] = sorted(mailbox.deleted_ids)
        return json_response(200, summary)
