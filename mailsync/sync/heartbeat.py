"""The lease of a claimed chunk, renewed from a thread while the attempt works."""

from __future__ import annotations

import threading

from mailsync.errors import MailsyncError
from mailsync.store.db import Database
from mailsync.store.rows import ChunkRow


class Heartbeat:
    """Renews the chunk's lease from its own connection while the attempt works.

    ``lost`` is set when the database says the claim is gone (recovery took it back): the
    attempt must stop. A database blink is not a loss; the page fence decides then.
    """

    def __init__(self, db: Database, chunk: ChunkRow, worker_id: str, interval_s: float) -> None:
        self._db, self._chunk, self._worker_id = db, chunk, worker_id
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chunk-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                row = self._db.one(
                    "heartbeat_chunk",
                    self._chunk.business_id,
                    chunk_id=self._chunk.id,
                    worker_id=self._worker_id,
                    attempt=self._chunk.attempts,
                )
            except MailsyncError:
                continue  # the database blinked; the page fence decides, not us
            if row is None or not row["alive"]:
                self.lost.set()
                return
