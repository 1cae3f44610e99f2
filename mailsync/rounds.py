"""A delta chunk: one delta round of one folder, checkpointed per page.

The chunk's checkpoint holds where the round goes on (``next_link``), so a retried or
resumed attempt continues from the last committed page. Each page, in one transaction:
its messages upserted (seen: no longer removal candidates), its ``@removed`` ids recorded as
candidates (mailsync.jobs applies them when the job ends, once every folder has spoken),
the checkpoint, and on the last page the folder's new deltaLink and the completion.

A round **from scratch** (the folder's first round after its full listing, or a restart)
returns every message in the folder and cannot say what was deleted before it. So its
first page, in the same transaction, presumes every message the store files in that
folder removed; the round withdraws each one it shows, and what is left when the job ends
is gone. Why a first round at all, after a full listing: Graph bakes a round's options
(``$select``) into its links and offers no "latest" token for mail, so the only deltaLink
that later returns whole messages comes from enumerating the folder with that ``$select``.

Two answers change course instead of failing the chunk:
- an expired token (410 / SyncStateNotFound / resyncRequired): the round restarts from
  scratch (``delta_resets``; at most ``MAX_RESETS_PER_ROUND`` times);
- 403 ErrorQuotaExceeded: no delta for this mailbox now. A folder just listed in full by
  this job needs nothing more; another is listed in full by keyset pages, from scratch
  (``fallback``). Either way it keeps no new deltaLink, so its next job lists it in full.
Both are logged with the reason.
"""

from __future__ import annotations

import logging

from mailsync.chunks import Attempt, prefetched
from mailsync.db import Session
from mailsync.delta import DeltaPage, iter_delta
from mailsync.errors import DeltaQuotaExceededError, GraphError, SyncStateExpiredError
from mailsync.graph import Cursor, Page
from mailsync.jobs import graph_time

logger = logging.getLogger(__name__)

# A token that expires again right after a restart is a Graph problem, not ours: fail then.
MAX_RESETS_PER_ROUND = 2


class DeltaAttempt(Attempt):
    counts_unchanged = False

    def _work(self) -> None:
        if self._full_copy_failed():
            # The folder's full listing in this job lost a chunk: its copy is incomplete, so
            # it must not get a deltaLink (the next job lists it in full again).
            self._commit(checkpoint={"skipped": "the folder's full listing failed"}, done=True)
            return
        if self.progress.get("fallback"):
            self._listing(Cursor.from_json(self.progress.get("fallback_cursor")))
            return
        while True:
            try:
                self._round()
                return
            except SyncStateExpiredError as exc:
                self._restart(exc)
            except DeltaQuotaExceededError as exc:
                self._fall_back(exc)
                return

    def _round(self) -> None:
        link = self.progress.get("next_link") or self.progress.get("start_link")
        mailbox, folder = self.store["mailbox"], self.folder_id
        pages = iter_delta(self.graph, mailbox, folder, link, self.job["page_size"])
        for page in prefetched(pages, self.timing):
            self._check_lease()
            self._write(page, from_scratch=link is None and not self.progress.get("presumed"))
            link = page.next_link

    def _write(self, page: DeltaPage, *, from_scratch: bool) -> None:
        job, folder = self.job, self.folder_id

        def removals_and_link(session: Session) -> None:
            if page.removed_ids:
                session.execute(
                    "insert_removals",
                    business_id=job["business_id"],
                    store_id=job["store_id"],
                    job_id=job["id"],
                    folder_id=folder,
                    graph_ids=page.removed_ids,
                )
            if page.delta_link is not None:
                session.execute(
                    "set_folder_delta_link",
                    store_id=job["store_id"],
                    folder_id=folder,
                    delta_link=page.delta_link,
                )

        checkpoint = {
            "next_link": page.next_link,
            "removed": self.progress.get("removed", 0) + len(page.removed_ids),
        }
        if from_scratch:
            checkpoint["presumed"] = True
        self._commit(
            messages=page.messages,
            failed=len(page.failed_ids),
            checkpoint=checkpoint,
            first=self._presume_folder_removed if from_scratch else None,
            also=removals_and_link,
            done=page.delta_link is not None,
        )

    def _presume_folder_removed(self, session: Session) -> None:
        job = self.job
        session.execute(
            "presume_folder_removed",
            job_id=job["id"],
            store_id=job["store_id"],
            folder_id=self.folder_id,
            since=None,
            until=None,
        )

    def _restart(self, exc: GraphError) -> None:
        resets = self.progress.get("delta_resets", 0) + 1
        if resets > MAX_RESETS_PER_ROUND:
            raise exc
        logger.warning(
            "folder %s of %s: delta state expired (%s); restarting its round from scratch "
            "and reconciling (reset %s)",
            self.folder_id,
            self.store["mailbox"],
            exc,
            resets,
        )
        self._commit(
            checkpoint={
                "mode": "reset",
                "next_link": None,
                "start_link": None,
                "presumed": False,
                "delta_resets": resets,
                "reset_reason": exc.code or str(exc.status),
            },
        )

    def _fall_back(self, exc: GraphError) -> None:
        if self.progress.get("mode") == "initial" and not self.progress.get("presumed"):
            logger.warning(
                "folder %s of %s: no delta state to be had (%s); its full listing in this job "
                "stands, and its next job lists it in full again",
                self.folder_id,
                self.store["mailbox"],
                exc,
            )
            self._commit(checkpoint={"fallback": exc.code or "quota"}, done=True)
            return
        logger.warning(
            "folder %s of %s: no delta state to be had (%s); listing it in full and reconciling",
            self.folder_id,
            self.store["mailbox"],
            exc,
        )
        self._commit(
            checkpoint={"fallback": exc.code or "quota", "fallback_cursor": None, "presumed": True},
            first=self._presume_folder_removed,
        )
        self._listing(Cursor())

    def _listing(self, cursor: Cursor) -> None:
        """The fallback: every message of the folder by keyset pages, checkpointed."""
        pages = self.graph.iter_pages(
            self.store["mailbox"],
            self.folder_id,
            cursor=cursor,
            since=graph_time(self.job["sync_from"]),
            until=graph_time(self.job["sync_to"]),
            page_size=self.job["page_size"],
        )
        for page in prefetched(pages, self.timing):
            self._check_lease()
            self._write_listing_page(page)

    def _write_listing_page(self, page: Page) -> None:
        self._commit(
            messages=page.messages,
            failed=len(page.failed_ids),
            checkpoint={"fallback_cursor": page.cursor.to_json()},
            done=page.last,
        )

    def _full_copy_failed(self) -> bool:
        row = self.db.one(
            "folder_full_chunks_failed",
            self.job["business_id"],
            job_id=self.job["id"],
            folder_id=self.folder_id,
        )
        return bool(row and row["failed"])
