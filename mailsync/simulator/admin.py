"""The simulator's own control API under ``/_sim``: faults, stats, tokens, mailboxes.

It steers a simulator in another process (``mailsync simulator``, the bench) as the
in-process attributes steer one in a test. Admin requests are never counted in the stats.

- ``GET /_sim/stats``, ``POST /_sim/stats/reset``; ``GET /_sim/limits``: per-mailbox usage
- ``GET /_sim/faults``, ``POST /_sim/faults`` (an object of ``Faults`` fields),
  ``POST /_sim/faults/reset``
- ``POST /_sim/hold/wait`` (optional body ``{"timeout_s": …}``): 200 once a page request is
  held (``hold_after_pages``), 408 when none was within the timeout; ``POST
  /_sim/hold/release``: answer the held requests, hold no more
- ``POST /_sim/tokens/expire``: every access token
- ``POST /_sim/delta/expire`` (optional body ``{"user": …}``): every delta and skip token
- ``POST /_sim/mailboxes`` ``{"user", "count" | "messages", "seed", "folder",
  "folders": "default" | [folder specs]}``; ``GET /_sim/mailboxes``
- ``GET /_sim/mailboxes/{user}``: summary and ids (all, added, deleted)
- ``GET /_sim/mailboxes/{user}/folders[?ids=true]``: the whole tree, with counts
- ``POST /_sim/mailboxes/{user}/mutations``: one mutation or a list
  (``mailsync.simulator.mutations``); answers what each did and the log's sequence number
- ``GET /_sim/subscriptions``: the live subscriptions and the delivery counters;
  ``POST /_sim/subscriptions/{id}/lifecycle`` ``{"event": "missed" | "subscriptionRemoved"
  | "reauthorizationRequired"}``; ``POST /_sim/subscriptions/{id}/expire``;
  ``POST /_sim/notifications/wait`` (optional ``{"timeout_s": …}``): 200 once nothing is
  queued or being delivered, 408 otherwise; ``POST /_sim/notifications`` (any of
  ``duplicate_every``, ``max_attempts``, ``retry_delay_s``): delivery switches
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl

from mailsync.simulator.faults import Faults
from mailsync.simulator.folders import FolderSpec
from mailsync.simulator.limits import MailboxLimits
from mailsync.simulator.mutations import apply, parse_mutations
from mailsync.simulator.stats import Stats
from mailsync.simulator.store import Mailbox
from mailsync.simulator.subscriptions import Subscriptions
from mailsync.simulator.wire import GraphFailure, Request, Response, bad_request, json_response


class Controls(Protocol):
    """What the admin API steers (the GraphSimulator)."""

    faults: Faults
    stats: Stats
    limits: MailboxLimits
    subscriptions: Subscriptions

    def add_mailbox(
        self,
        user: str,
        count: int | None = None,
        seed: int = 0,
        folder: str = "inbox",
        *,
        folders: Sequence[FolderSpec] | str | None = None,
    ) -> Mailbox: ...

    def mailbox(self, user: str) -> Mailbox: ...

    def mailboxes(self) -> list[Mailbox]: ...

    def expire_all_tokens(self) -> None: ...

    def expire_delta_tokens(self, user: str | None = None) -> None: ...


class AdminApi:
    def __init__(self, controls: Controls) -> None:
        self._controls = controls

    def route(self, request: Request, segments: list[str]) -> Response:
        """``segments`` are the path after ``/_sim``."""
        controls = self._controls
        method = request.method
        if method == "GET" and segments == ["limits"]:  # per-mailbox usage (simulator.limits)
            return json_response(200, controls.limits.as_dict())
        if method == "GET" and segments == ["stats"]:
            return json_response(200, controls.stats.as_dict())
        if method == "POST" and segments == ["stats", "reset"]:
            controls.stats.reset()
            return json_response(200, controls.stats.as_dict())
        if method == "GET" and segments == ["faults"]:
            return json_response(200, controls.faults.as_dict())
        if method == "POST" and segments == ["faults"]:
            return self._set_faults(request)
        if method == "POST" and segments == ["faults", "reset"]:
            controls.faults.reset()
            return json_response(200, controls.faults.as_dict())
        if method == "POST" and segments == ["hold", "wait"]:
            return self._wait_held(request)
        if method == "POST" and segments == ["hold", "release"]:
            controls.faults.release_held()
            return json_response(200, {"released": True})
        if method == "POST" and segments == ["tokens", "expire"]:
            controls.expire_all_tokens()
            return json_response(200, {"expired": True})
        if method == "POST" and segments == ["delta", "expire"]:
            return self._expire_delta(request)
        if segments[:1] == ["mailboxes"]:
            return self._mailboxes(request, segments[1:])
        if segments[:1] in (["subscriptions"], ["notifications"]):
            return self._subscriptions(request, segments)
        raise GraphFailure(404, "NotFound", f"No admin resource {method} {request.path}.")

    def _mailboxes(self, request: Request, segments: list[str]) -> Response:
        method = request.method
        if method == "POST" and not segments:
            return self._add_mailbox(request)
        if method == "GET" and not segments:
            mailboxes = self._controls.mailboxes()
            return json_response(200, {"value": [m.summary() for m in mailboxes]})
        mailbox = self._mailbox(segments[0]) if segments else None
        if mailbox is not None and method == "GET" and len(segments) == 1:
            summary: dict[str, Any] = mailbox.summary()
            summary["ids"] = sorted(mailbox.ids())
            summary["added_ids"] = sorted(mailbox.added_ids)
            summary["deleted_ids"] = sorted(mailbox.deleted_ids)
            return json_response(200, summary)
        if mailbox is not None and method == "GET" and segments[1:] == ["folders"]:
            with_ids = dict(parse_qsl(request.query)).get("ids", "").lower() == "true"
            return json_response(200, {"value": describe_folders(mailbox, with_ids=with_ids)})
        if mailbox is not None and method == "POST" and segments[1:] == ["mutations"]:
            return self._mutate(request, mailbox)
        raise GraphFailure(404, "NotFound", f"No admin resource {method} {request.path}.")

    def _subscriptions(self, request: Request, segments: list[str]) -> Response:
        subscriptions = self._controls.subscriptions
        body = json.loads(request.body or b"{}") if request.method == "POST" else {}
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        if request.method == "GET" and segments == ["subscriptions"]:
            return json_response(200, subscriptions.describe())
        if request.method == "POST" and segments == ["notifications", "wait"]:
            timeout = body.get("timeout_s", 30)
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
                raise bad_request("'timeout_s' must be a number of seconds >= 0")
            idle = subscriptions.wait_idle(float(timeout))
            return json_response(200 if idle else 408, {"idle": idle})
        if request.method == "POST" and segments == ["notifications"]:
            try:
                subscriptions.configure(body)
            except ValueError as exc:
                raise bad_request(str(exc)) from None
            return json_response(200, subscriptions.describe())
        if request.method == "POST" and len(segments) == 3 and segments[0] == "subscriptions":
            try:
                if segments[2] == "lifecycle":
                    subscriptions.lifecycle(segments[1], str(body.get("event")))
                elif segments[2] == "expire":
                    subscriptions.expire(segments[1])
                else:
                    raise GraphFailure(404, "NotFound", f"No admin resource {request.path}.")
            except KeyError:
                raise GraphFailure(404, "NotFound", f"No subscription {segments[1]!r}.") from None
            except ValueError as exc:
                raise bad_request(str(exc)) from None
            return json_response(200, {"done": True})
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

    def _wait_held(self, request: Request) -> Response:
        body = json.loads(request.body or b"{}")
        timeout = body.get("timeout_s", 30) if isinstance(body, dict) else 30
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise bad_request("'timeout_s' must be a number of seconds >= 0")
        if self._controls.faults.wait_held(float(timeout)):
            return json_response(200, {"held": True})
        return json_response(408, {"held": False})

    def _expire_delta(self, request: Request) -> Response:
        body = json.loads(request.body or b"{}")
        user = body.get("user") if isinstance(body, dict) else None
        try:
            self._controls.expire_delta_tokens(None if user is None else str(user))
        except KeyError:
            raise GraphFailure(404, "ErrorInvalidUser", f"No mailbox {user!r}.") from None
        return json_response(200, {"expired": True})

    def _add_mailbox(self, request: Request) -> Response:
        try:
            spec = json.loads(request.body or b"{}")
            folders = spec.get("folders")
            if isinstance(folders, list):
                folders = [FolderSpec.from_json(raw) for raw in folders]
            mailbox = self._controls.add_mailbox(
                str(spec["user"]),
                int(spec["count"] if "count" in spec else spec.get("messages", 0)),
                int(spec.get("seed", 0)),
                str(spec.get("folder", "inbox")),
                folders=folders,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise bad_request(f"Cannot add mailbox: {exc!r}") from None
        return json_response(201, mailbox.summary())

    def _mailbox(self, user: str) -> Mailbox:
        try:
            return self._controls.mailbox(user)
        except KeyError:
            raise GraphFailure(404, "ErrorInvalidUser", f"No mailbox {user!r}.") from None

    def _mutate(self, request: Request, mailbox: Mailbox) -> Response:
        try:
            mutations = parse_mutations(json.loads(request.body or b"{}"))
            results = [apply(mailbox, mutation) for mutation in mutations]
        except (ValueError, KeyError) as exc:
            raise bad_request(f"Cannot mutate: {exc!r}") from None
        return json_response(200, {"results": results, "seq": mailbox.log.seq})


def describe_folders(mailbox: Mailbox, *, with_ids: bool = False) -> list[dict[str, Any]]:
    """Every folder below the root, parents first, with paths and counts (and ids)."""
    out = []
    for folder in mailbox.all_folders():
        total, unread = mailbox.counts(folder)
        entry: dict[str, Any] = {
            "id": folder.id,
            "displayName": folder.display_name,
            "parentFolderId": folder.parent_id,
            "path": folder.path,
            "wellKnownName": folder.well_known,
            "isHidden": folder.hidden,
            "isSearchFolder": folder.is_search,
            "totalItemCount": total,
            "unreadItemCount": unread,
        }
        if with_ids:
            entry["ids"] = sorted(mailbox.folder_ids(folder))
        out.append(entry)
    return out
