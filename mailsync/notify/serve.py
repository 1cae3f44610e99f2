"""Running the receiver: uvicorn on a socket of ours, in the foreground (the command) or in
a thread (tests, the bench), and the relay beside it.

One process runs both by default (``mailsync notifications serve``): the receiver wakes the
relay as soon as it has written rows, so an event leaves within milliseconds, and there is
one thing to deploy. ``--no-relay`` and ``mailsync notifications relay`` split them, e.g.
to run several receivers behind a load balancer and one relay.
"""

from __future__ import annotations

import socket
import threading

import uvicorn
from starlette.applications import Starlette

STARTUP_TIMEOUT_S = 30.0


class ReceiverServer:
    """``with ReceiverServer(app) as server:`` serves ``app`` on ``server.url`` from a
    thread."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        # Bound here, so the port is known before serving (port 0: a free one).
        self.socket = socket.create_server((host, port), reuse_port=False)
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def run(self) -> None:
        """Serve in this thread until ``stop`` (or a signal, in the main thread)."""
        self.server.run(sockets=[self.socket])

    def start(self) -> ReceiverServer:
        self._thread = threading.Thread(target=self.run, name="notification-receiver", daemon=True)
        self._thread.start()
        # uvicorn says when it listens only through this flag; the socket already accepts
        # connections (the kernel queues them), so this wait is for tidiness, not safety.
        deadline = threading.Event()
        for _ in range(int(STARTUP_TIMEOUT_S / 0.01)):
            if self.server.started:
                break
            deadline.wait(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.socket.close()

    def __enter__(self) -> ReceiverServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
