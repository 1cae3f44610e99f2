"""The HTTP server on loopback and ``GraphSimulator``, which owns everything it serves.

A request is routed to the identity platform, the directory (``GET /v1.0/users``), the
Graph mail API (after the bearer token, the user, injected failures and the per-mailbox
limits of ``limits``) or the admin API. A bug in a handler becomes a logged 500, never a
dropped connection.
"""

from __future__ import annotations

import socket
import sys
import threading
import traceback
import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from mailsync.simulator.admin import AdminApi
from mailsync.simulator.attachments import AttachmentFaults
from mailsync.simulator.batch import serve_batch
from mailsync.simulator.delta import DeltaApi
from mailsync.simulator.directory import Directory
from mailsync.simulator.faults import Faults
from mailsync.simulator.folders import DEFAULT_TREE, FolderSpec
from mailsync.simulator.generator import DEFAULT_START
from mailsync.simulator.identity import (
    DEFAULT_AUTHORITY_HOST,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    IdentityPlatform,
    TokenStore,
)
from mailsync.simulator.limits import MailboxLimits
from mailsync.simulator.mail import MailApi
from mailsync.simulator.odata import prefers_immutable_ids
from mailsync.simulator.stats import Stats, request_kind
from mailsync.simulator.store import Mailbox
from mailsync.simulator.subscriptions import Subscriptions
from mailsync.simulator.wire import (
    JSON_TYPE,
    GraphFailure,
    Request,
    Response,
    format_seconds,
    graph_error_response,
    segment_not_found,
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections would make server_close() hang
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], simulator: GraphSimulator) -> None:
        super().__init__(address, _Handler)
        self.simulator = simulator
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    timeout = 120  # an idle keep-alive connection frees its thread eventually
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # the client went away first

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown test output

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        address = self.server.server_address
        host = self.headers.get("Host") or f"{address[0]!s}:{address[1]}"
        request = Request(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            base_url=f"http://{host}",
        )
        response = self.server.simulator.handle(request)
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if "Content-Type" not in response.headers:
                self.send_header("Content-Type", JSON_TYPE)
            if response.stream is None:
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)
            else:
                self.send_header("Content-Length", str(response.length))
                self.end_headers()
                for chunk in response.stream:
                    self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class GraphSimulator:
    """The simulator; ``with GraphSimulator() as sim:`` starts it on a free loopback port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        faults: Faults | None = None,
        authority_host: str = DEFAULT_AUTHORITY_HOST,
    ) -> None:
        self.host = host
        self.port = port
        self.faults = faults or Faults()
        self.stats = Stats()
        self.tokens = TokenStore()
        self.identity = IdentityPlatform(
            client_id=client_id,
            client_secret=client_secret,
            authority_host=authority_host,
            faults=self.faults,
            issue_token=self.issue_token,
        )
        self.delta = DeltaApi(self.faults, self.stats)
        self.attachments = AttachmentFaults()  # attachments' own faults and counters
        self._mail = MailApi(self.faults, self.stats, self.tokens, self.delta, self.attachments)
        self._admin = AdminApi(self)
        self.limits = MailboxLimits()  # Graph's per-mailbox limits, counted
        self.directory = Directory()  # GET /v1.0/users: users, shared mailboxes
        self._mailboxes: dict[str, Mailbox] = {}  # by lower-cased UPN and by user id
        self._mailboxes_lock = threading.Lock()
        # /v1.0/subscriptions: change notifications POSTed from a thread of their own
        self.subscriptions = Subscriptions(self._user_id)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def client_id(self) -> str:
        return self.identity.client_id

    @property
    def client_secret(self) -> str:
        return self.identity.client_secret

    # -- lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self._server.server_address[1]}"

    def bind(self) -> _Server:
        """Open the listening socket (so ``url`` is known) without serving yet."""
        if self._server is None:
            self._server = _Server((self.host, self.port), self)
        return self._server

    def start(self) -> GraphSimulator:
        if self._thread is not None:
            return self
        server = self.bind()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="graph-simulator",
            daemon=True,
        )
        self._thread.start()
        self.subscriptions.start()
        return self

    def stop(self) -> None:
        self.subscriptions.stop()
        server, self._server = self._server, None
        if server is None:
            return
        if self._thread is not None:
            server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        # Handler threads block reading idle keep-alive connections: hang those up.
        with server.connections_lock:
            for conn in list(server.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        server.server_close()

    def __enter__(self) -> GraphSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- mailboxes and tokens

    def add_mailbox(
        self,
        user: str,
        count: int | None = None,
        seed: int = 0,
        folder: str = "inbox",
        *,
        messages: int | None = None,
        folders: Sequence[FolderSpec] | str | None = None,
        start: datetime = DEFAULT_START,
    ) -> Mailbox:
        """A mailbox of ``count`` (or ``messages``) generated messages. Without ``folders``,
        one folder named ``folder`` holds them all; with ``folders="default"``
        (``DEFAULT_TREE``) or a sequence of ``FolderSpec``, a folder tree does, the messages
        spread over it by weight, and ``folder`` only says where new mail arrives."""
        if count is not None and messages is not None and count != messages:
            raise ValueError("give the message count once: count or messages")
        total = count if count is not None else messages or 0
        if isinstance(folders, str):
            if folders != "default":
                raise ValueError(f"folders must be 'default' or folder specs, not {folders!r}")
            folders = DEFAULT_TREE
        mailbox = Mailbox(user, total, seed=seed, folder=folder, start=start, folders=folders)
        with self._mailboxes_lock:
            if user.lower() in self._mailboxes:
                raise ValueError(f"mailbox {user!r} already exists")
            self._mailboxes[user.lower()] = mailbox
            self._mailboxes[mailbox.user_id] = mailbox
        mailbox.log.listeners.append(partial(self.subscriptions.changed, mailbox.user_id))
        return mailbox

    def mailbox(self, user: str) -> Mailbox:
        """By UPN (any case) or user id; KeyError when unknown."""
        return self._mailboxes[user.lower()]

    def _user_id(self, user: str) -> str | None:
        mailbox = self._mailboxes.get(user.lower())
        return None if mailbox is None else mailbox.user_id

    def mailboxes(self) -> list[Mailbox]:
        with self._mailboxes_lock:
            return list({id(m): m for m in self._mailboxes.values()}.values())

    def issue_token(self) -> str:
        """A valid access token, as the token endpoint would issue it (a test shortcut)."""
        return self.tokens.issue(self.faults.token_lifetime_s)

    def expire_all_tokens(self) -> None:
        """Expire every access token (the identity platform's, not delta tokens)."""
        self.tokens.expire_all()

    def expire_delta_tokens(self, user: str | None = None) -> None:
        """Kill every delta and skip token (of one mailbox, by UPN or id, or of all): their
        next use answers 410 with ``faults.delta_expired_code``."""
        self.delta.expire(None if user is None else self.mailbox(user).user_id)

    # -- dispatch

    def handle(self, request: Request) -> Response:
        """Answer one request; never raises (a bug becomes a logged 500)."""
        request_id = str(uuid.uuid4())
        segments = [unquote(s) for s in request.path.split("/") if s]
        admin = bool(segments) and segments[0] == "_sim"
        token = len(segments) >= 2 and segments[-1].lower() == "token"
        data = bool(segments) and segments[0].lower() == "v1.0"
        kind = request_kind(segments[3:], request.query) if data else None
        if data and [s.lower() for s in segments[1:]] == ["$batch"]:
            kind = "batch"
        try:
            response = self._route(request, segments)
        except GraphFailure as failure:
            response = graph_error_response(failure, request_id)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            bug = GraphFailure(500, "InternalServerError", "Simulator bug, see its stderr.")
            response = graph_error_response(bug, request_id)
        response.headers.setdefault("request-id", request_id)
        response.headers.setdefault(
            "client-request-id", request.headers.get("client-request-id", request_id)
        )
        if not admin:
            self.stats.record(response.status, token=token, data=data, kind=kind)
        return response

    def _route(self, request: Request, segments: list[str]) -> Response:
        first = segments[0].lower() if segments else ""
        if first == "_sim":
            return self._admin.route(request, segments[1:])
        if first == "v1.0" and len(segments) >= 2 and segments[1].lower() == "subscriptions":
            self._authenticate(request)
            return self.subscriptions.route(request, segments[2:])
        if first == "v1.0":
            if [x.lower() for x in segments[1:]] == ["$batch"] and request.method == "POST":
                return self._batch(request)
            if request.method != "GET":
                raise GraphFailure(405, "Request_BadRequest", "Only GET is simulated.")
            return self._graph(request, segments[1:])
        response = self.identity.route(request, segments)
        if response is None:
            raise segment_not_found(segments)
        return response

    def _graph(self, request: Request, segments: list[str]) -> Response:
        self._authenticate(request)
        if [s.lower() for s in segments] == ["users"]:
            return self.directory.route(request, self.mailboxes())
        if len(segments) < 2 or segments[0].lower() != "users":
            raise segment_not_found(segments)
        mailbox = self._mailboxes.get(segments[1].lower())
        if mailbox is None:
            raise self.directory.without_mailbox(segments[1])
        self._inject_failures()
        self.attachments.observe(request)
        with self.limits.slot(mailbox.user, self.faults):
            response = self._mail.route(request, mailbox, segments[2:])
        if prefers_immutable_ids(request.headers.get("prefer")):
            applied = [response.headers.get("Preference-Applied"), 'IdType="ImmutableId"']
            response.headers["Preference-Applied"] = ", ".join(a for a in applied if a)
        return response

    def _batch(self, request: Request) -> Response:
        """JSON batching (mailsync.simulator.batch): each item as if sent alone, counted
        under its kind in ``stats.batch_items`` (the envelope is the one HTTP request)."""
        self._authenticate(request)
        response, items = serve_batch(
            request, self._graph, lambda failure: graph_error_response(failure, "batch-item")
        )
        for status, segments, query in items:
            self.stats.record_batch_item(status, request_kind(segments[3:], query))
        return response

    def _authenticate(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.tokens.valid(token.strip()):
            return
        message = (
            "Access token is empty."
            if not token.strip()
            else "Access token has expired or is not yet valid."
        )
        raise GraphFailure(
            401,
            "InvalidAuthenticationToken",
            message,
            {
                "WWW-Authenticate": 'Bearer realm="", authorization_uri='
                '"https://login.microsoftonline.com/common/oauth2/authorize", '
                'client_id="00000003-0000-0000-c000-000000000000"'
            },
        )

    def _inject_failures(self) -> None:
        status = self.faults.take_server_error()
        if status is not None:
            code = {503: "ServiceUnavailable", 504: "GatewayTimeout"}.get(status, "UnknownError")
            raise GraphFailure(status, code, "The service is temporarily unavailable.")
        if self.faults.take_throttle():
            raise GraphFailure(
                429,
                "TooManyRequests",
                "Application is over its MailboxConcurrency limit.",
                {"Retry-After": format_seconds(self.faults.retry_after_s)},
            )


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 8765,
    mailboxes: dict[str, int] | None = None,
    seed: int = 0,
    *,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    folders: str | None = None,
) -> None:
    """Run a simulator in the foreground (``mailsync simulator``) until interrupted;
    ``folders="default"`` gives each mailbox the default folder tree.

    Prints the base URL alone on the first stdout line, so a parent process can read it.
    """
    simulator = GraphSimulator(host, port, client_id=client_id, client_secret=client_secret)
    for user, count in (mailboxes or {}).items():
        simulator.add_mailbox(user, count, seed, folders=folders)
    server = simulator.bind()
    print(simulator.url, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
