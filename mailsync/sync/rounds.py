"""A delta chunk: a stretch of one folder's delta round, checkpointed per page.

A folder's first sync (and every ``--full`` sync) *is* a delta round from scratch: Graph
returns every message of the folder, page by page, chained by nextLinks, and ends with the
folder's first deltaLink. The plan cuts that round into chunks by the folder's message
count: each chunk writes about ``chunk_size`` messages and stops after a page, its nextLink
committed with that page; the next chunk of the folder continues from there (the request
for that link is usually in flight already: mailsync.graph.prefetch). The folder's last chunk
runs to the end of the round, whatever the count said. A later sync is one chunk: one
round from the folder's deltaLink.

Where a folder's round stands lives in the job's checkpoints (``sync_state_checkpoints``,
one row per committed page, ``cursor`` = ``RoundState``), written in each page's
transaction: a retried attempt, the next chunk, a resumed job all continue from the
newest one. Each page, in one transaction: its messages upserted (seen: no longer
removal candidates), its ``@removed`` ids recorded as candidates (mailsync.sync.jobs applies
them when the job ends, once every folder has spoken), the round's position, the chunk's
progress, and on the round's last page the folder's new deltaLink.

A round **from scratch** cannot say what was deleted before it: its first page, in the
same transaction, presumes every message the store files in that folder removed; the round
withdraws each one it shows, and what is left when the job ends is gone. Its content is
fixed when its first page is served, so what changed while it was paged comes in the next
round: a round from scratch is followed at once by one round from its own deltaLink (the
catch-up, usually one request), and the job ends exact: each folder as it stood when its
last round ended, as after any incremental round. A round from scratch of **one page**
has no such gap (it was served whole, at one moment, with its deltaLink): it gets no
catch-up, which would only bring what changed after the round, as the next sync will.

What follows a round is requested as soon as its last page's deltaLink is read off the
raw bytes, before that page is parsed and written (mailsync.graph.prefetch, ``Then``): the
catch-up round, and the first page of the next folder's round (``next_round``, which the
plan gives each delta chunk). Both are then on their way together, while this folder's
last pages are written and its chunk ends, within the mailbox's four requests in flight
(mailsync.graph.limits): per folder, the catch-up costs a request but no wait, and the next
folder's first page no wait either. Chunks still run, and commit, in order.

Two answers change course instead of failing the chunk:
- an expired token (410 / SyncStateNotFound / resyncRequired): the round restarts from
  scratch (``delta_resets``; at most ``MAX_RESETS_PER_ROUND`` times per attempt);
- 403 ErrorQuotaExceeded: no delta for this mailbox now. The folder is listed in full by
  keyset pages instead, from scratch, in this chunk (``fallback``); it keeps no new
  deltaLink.
Both are logged with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import closing
from typing import Any, TypedDict, cast
from urllib.parse import urlsplit

from mailsync.errors import DeltaQuotaExceededError, GraphError, SyncStateExpiredError
from mailsync.graph.client import Cursor, Page
from mailsync.graph.delta import DeltaPage, iter_delta, round_start
from mailsync.graph.prefetch import Params, Then
from mailsync.store.db import Session
from mailsync.sync.attempt import Attempt, Position
from mailsync.sync.jobs import graph_time

logger = logging.getLogger(__name__)

# A token that expires again right after a restart is a Graph problem, not ours: fail then.
MAX_RESETS_PER_ROUND = 2


class RoundState(TypedDict, total=False):
    """Where a folder's round stands (a checkpoint's ``cursor``)."""

    next_link: str | None  # the next request of the round; None: a new round from scratch
    scratch: bool  # the round started from scratch (a catch-up round follows it)
    catch_up: bool  # this is the catch-up round after one from scratch
    fallback: bool  # no delta to be had: a keyset listing of the folder instead
    listing: dict[str, Any] | None  # the fallback listing's keyset cursor


class DeltaAttempt(Attempt):
    def _work(self) -> None:
        if self.position.exhausted:  # an earlier chunk of the folder finished its round
            self._commit(done=True, exhausted=True)
            return
        state: RoundState | None = self._start_state()
        while state is not None:
            try:
                if state.get("fallback"):
                    self._listing(state)
                    return
                state = self._round(state)
            except SyncStateExpiredError as exc:
                state = self._restart(exc)
            except DeltaQuotaExceededError as exc:
                state = self._fall_back(exc)

    def _start_state(self) -> RoundState:
        """The folder's newest position in this job (this chunk's last page, or an earlier
        chunk's), else where the plan starts the round."""
        if self.position.state:
            return cast(RoundState, self.position.state)
        start = self.progress.get("start_link")
        return RoundState(next_link=start, scratch=start is None, catch_up=False)

    @property
    def _last(self) -> bool:
        return bool(self.chunk.last_in_folder) or self.index == self.chunk.total_chunks

    def _round(self, state: RoundState) -> RoundState | None:
        """Follow the round from ``state`` until the chunk is done (None), or until a round
        from scratch ends: then where its catch-up round starts."""
        link = state.get("next_link")
        if link is not None and not self.graph.serves(link):
            # Kept from another Graph host (the Graph URL changed while the job was planned
            # or unfinished): the token may not go there, and its state means nothing here.
            raise SyncStateExpiredError(
                f"the round's link is for {urlsplit(link).netloc}, not this Graph host",
                code="OtherGraphHost",
            )
        mailbox, folder = self.store.mailbox, self.folder_id
        then = self._then(state)
        pages = iter_delta(
            self.graph, mailbox, folder, link, self.job.page_size, self.prefetch, then
        )
        with closing(pages):
            while (page := self.timing.wait(pages)) is not None:
                self._check_lease()
                after = self._after(page, state, opening=link is None)
                complete = page.delta_link is not None and after.get("next_link") is None
                done = complete or (
                    self._full(page) and not self._last and not state.get("catch_up")
                )
                self._write(page, after, presume=link is None, done=done, complete=complete)
                if done:
                    return None
                if page.delta_link is not None:
                    return after  # a round from scratch ended: its catch-up round next
                state, link = after, after.get("next_link")
        raise AssertionError("a delta round ends with a page that has its deltaLink")

    def _after(self, page: DeltaPage, state: RoundState, *, opening: bool) -> RoundState:
        """The round's position once this page is written (``opening``: the page is a round
        from scratch's first, asked without a link)."""
        if page.next_link is not None:
            return RoundState(
                next_link=page.next_link,
                scratch=bool(state.get("scratch")),
                catch_up=bool(state.get("catch_up")),
            )
        if state.get("scratch") and not state.get("catch_up") and not opening:
            return RoundState(next_link=page.delta_link, scratch=True, catch_up=True)
        # The round is complete: an incremental or catch-up round, or a round from scratch
        # of one page (no gap between its content and its deltaLink to catch up on).
        return RoundState(next_link=None, scratch=False, catch_up=False)

    def _then(self, state: RoundState) -> Then:
        """What this round's end requests at once (mailsync.graph.prefetch): the catch-up
        round after a round from scratch of more than one page (as ``_after`` decides), and
        the next folder's first page. A link read early that is not this Graph host's is
        left for the parsed page to refuse."""
        catch_up = bool(state.get("scratch")) and not state.get("catch_up")
        following = self._next_round()

        def then(delta_link: str, opening: bool) -> list[tuple[str, Params]]:
            if catch_up and not opening and self.graph.serves(delta_link):
                return [(delta_link, None), *following]
            return following

        return then

    def _next_round(self) -> list[tuple[str, Params]]:
        """The first request of the next folder's round, as the plan named it for this
        chunk (none: this is the job's last folder, or a plan made before it was named)."""
        upcoming = self.progress.get("next_round")
        if not isinstance(upcoming, dict) or not isinstance(upcoming.get("folder_id"), str):
            return []
        link = upcoming.get("start_link")
        if link is not None and not (isinstance(link, str) and self.graph.serves(link)):
            return []  # its chunk will restart it from scratch (another Graph host)
        start = round_start(self.graph, self.store.mailbox, upcoming["folder_id"], link)
        return [start]

    def _full(self, page: DeltaPage) -> bool:
        """With this page, the chunk has its share of the round (``chunk_size`` messages)."""
        delivered = self.progress.get("delivered", 0) + len(page.messages) + len(page.failed_ids)
        return int(delivered) >= int(self.chunk.chunk_size)

    def _write(
        self, page: DeltaPage, after: RoundState, *, presume: bool, done: bool, complete: bool
    ) -> None:
        job, folder = self.job, self.folder_id
        position = self._position_writer(after, exhausted=complete, delivered=page)

        def removals_link_position(session: Session) -> None:
            if page.removed_ids:
                session.execute(
                    "insert_removals",
                    business_id=job.business_id,
                    store_id=job.store_id,
                    job_id=job.id,
                    folder_id=folder,
                    graph_ids=page.removed_ids,
                )
            if page.delta_link is not None:
                session.execute(
                    "set_folder_delta_link",
                    store_id=job.store_id,
                    folder_id=folder,
                    delta_link=page.delta_link,
                )
            position(session)

        delivered = len(page.messages) + len(page.failed_ids)
        self._commit(
            messages=page.messages,
            failed=len(page.failed_ids),
            checkpoint={
                "next_link": after.get("next_link"),
                "delivered": self.progress.get("delivered", 0) + delivered,
                "removed": self.progress.get("removed", 0) + len(page.removed_ids),
            },
            first=self._presume_folder_removed if presume else None,  # a round's first page
            also=removals_link_position,
            done=done,
            exhausted=complete,
        )
        self.position = Position(
            exhausted=complete,
            emails_processed=self.position.emails_processed + len(page.messages),
            state=dict(after),
        )

    def _position_writer(
        self, state: RoundState, *, exhausted: bool, delivered: DeltaPage | Page | None = None
    ) -> Callable[[Session], None]:
        written = len(delivered.messages) if delivered is not None else 0
        processed = self.position.emails_processed + written
        return self._checkpoint(dict(state), processed, exhausted=exhausted)

    def _presume_folder_removed(self, session: Session) -> None:
        job = self.job
        session.execute(
            "presume_folder_removed",
            job_id=job.id,
            store_id=job.store_id,
            folder_id=self.folder_id,
            since=None,
            until=None,
        )

    def _restart(self, exc: GraphError) -> RoundState:
        resets = self.progress.get("delta_resets", 0) + 1
        if resets > MAX_RESETS_PER_ROUND:
            raise exc
        logger.warning(
            "folder %s of %s: delta state expired (%s); restarting its round from scratch "
            "and reconciling (reset %s)",
            self.folder_id,
            self.store.mailbox,
            exc,
            resets,
        )
        state = RoundState(next_link=None, scratch=True, catch_up=False)
        self._commit(
            checkpoint={
                "next_link": None,
                "delta_resets": resets,
                "reset_reason": exc.code or str(exc.status),
            },
            also=self._position_writer(state, exhausted=False),
        )
        return state

    def _fall_back(self, exc: GraphError) -> RoundState:
        logger.warning(
            "folder %s of %s: no delta state to be had (%s); listing it in full and reconciling",
            self.folder_id,
            self.store.mailbox,
            exc,
        )
        state = RoundState(fallback=True, listing=None)
        self._commit(
            checkpoint={"fallback": exc.code or "quota"},
            first=self._presume_folder_removed,
            also=self._position_writer(state, exhausted=False),
        )
        return state

    def _listing(self, state: RoundState) -> None:
        """The fallback: the rest of the folder by keyset pages, checkpointed; None: done."""
        pages = self.graph.iter_pages(
            self.store.mailbox,
            self.folder_id,
            cursor=Cursor.from_json(state.get("listing")),
            since=graph_time(self.job.sync_from),
            until=graph_time(self.job.sync_to),
            page_size=self.job.page_size,
        )
        with closing(self.prefetch.ahead(self.timing.fetching(pages))) as ahead:
            while (page := self.timing.wait_ahead(ahead)) is not None:
                self._check_lease()
                after = RoundState(fallback=True, listing=page.cursor.to_json())
                self._commit(
                    messages=page.messages,
                    failed=len(page.failed_ids),
                    also=self._position_writer(after, exhausted=page.last, delivered=page),
                    done=page.last,
                    exhausted=page.last,
                )
                self.position = Position(
                    exhausted=page.last,
                    emails_processed=self.position.emails_processed + len(page.messages),
                    state=dict(after),
                )
