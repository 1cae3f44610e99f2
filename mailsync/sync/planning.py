"""Planning a job: which folders, each full or incremental, and the chunks that do it.

For each folder of the job's selection (every real folder for ``all``):
- **full** (its first sync, ``--full``, or no deltaLink kept): one delta round from scratch
  (mailsync.sync.rounds), which returns every message of the folder and ends with its first
  deltaLink, cut into chunks of ``chunk_size`` messages (in whole pages) by Graph's count
  of the folder.
  Every message the store files there is presumed removed until the job sees it: after
  the job, the live rows equal the folder.
- **incremental**: one chunk, one delta round from the folder's deltaLink.
- a **sync window** keeps no delta state: window chunks that list it by keyset pages
  (drift-proof; mailsync.sync.attempt.WindowAttempt).
The chunks run in order, folder after folder. A folder gone from the mailbox is tombstoned
and its messages presumed removed (moved mail is seen elsewhere).

What planning costs Graph (issue 23): the folder tree comes from ``mailFolders/delta`` (its
deltaLink kept per store: one request when no folder changed; the whole tree, flat, on a
first sync); a full folder is sized by the tree's ``totalItemCount`` (no ``$count`` per
folder; a window still counts, the tree's totals are the whole folder's); and every
incremental folder's round is asked at once, in one JSON ``$batch`` (mailsync.graph.batch)
of their deltaLinks. A folder whose round comes back empty, with a new deltaLink, has
nothing to sync: its new link is stored with the plan and it gets no chunk, task run or
chunk row (the job counts it, ``folders_unchanged``). A folder with changes gets its chunk
as before; the batch's answer, its round's first page, is handed to the chunk through the
process's prefetcher (mailsync.graph.prefetch, ``offer``), so the chunk does not ask it again
(another process's chunk, or one after ``max_age_s``, does). A no-change cycle of a mailbox
is two requests: the folder delta and the batch; a changed folder whose round is one page
adds none.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from mailsync.errors import BadDataError, InvalidInputError, SyncStateExpiredError
from mailsync.graph.batch import get_many
from mailsync.graph.client import GraphClient
from mailsync.graph.delta import fetch_page, page_from_body
from mailsync.graph.folders import (
    Folder,
    FolderTreeDelta,
    folder_tree_delta,
    resolve_folder,
    tree_of,
    well_known_ids,
)
from mailsync.graph.prefetch import PagePrefetch
from mailsync.store.db import Database, Session
from mailsync.store.rows import FolderRow, JobRow, StoreRow
from mailsync.sync import shutdown
from mailsync.sync.jobs import graph_time

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FolderPlan:
    folder_id: str
    full: bool
    estimated: int  # messages to list in full (0 for an incremental folder)
    start_link: str | None  # where the folder's delta round starts (None: from scratch)


class Planned(NamedTuple):
    job: JobRow  # as planned: total_chunks, estimated_emails, folders, sync_type
    max_attempts: int  # each of its chunks'


def plan_job(
    db: Database,
    graph: GraphClient,
    job: JobRow,
    store: StoreRow,
    max_attempts: int,
    prefetch: PagePrefetch | None = None,
) -> Planned:
    """Plan the job once (a planned job keeps its plan); the job's row with the chunks'
    ``max_attempts``. A changed folder's first page, answered in the plan's batch, is
    offered to ``prefetch`` for its chunk, which then does not ask it again."""
    if job.total_chunks is not None:
        return Planned(job, _planned_max_attempts(db, job, max_attempts))
    calls_before = graph.api_calls
    if job.folder.lower() == "all":
        folders = _current_tree(db, graph, job, store)
    else:
        folders = _record_folders(db, job, [resolve_folder(graph, store.mailbox, job.folder)])
    everything = [_plan_folder(graph, job, store, folder) for folder in folders]
    plans, unchanged = _ask_rounds(graph, store.mailbox, job, everything, prefetch)
    chunks = chunk_rows(plans, job.chunk_size, job.page_size, windowed=job.windowed)
    with db.pipelined(job.business_id) as session:
        row = session.one(
            "plan_sync_job",
            job_id=job.id,
            estimated_emails=sum(p.estimated for p in plans),
            total_chunks=len(chunks),
            folders=len(everything),
            folders_unchanged=len(unchanged),
            sync_type=_sync_type(job, plans),
            max_attempts=max_attempts,
            api_calls=graph.api_calls - calls_before,
            chunks=chunks,
        )
        created = bool(row and row["planned"])  # one column: no class of its own
        # Only the planner whose plan was recorded presumes: a second process that read the
        # job before the first one's plan committed waits for it on the job's row, records
        # nothing, and must not presume messages removed that the running chunks have
        # already shown (they would be marked deleted when the job ends).
        if created:
            _presume_removed(session, job, plans)
            if unchanged:
                session.execute("set_folder_delta_links", store_id=job.store_id, links=unchanged)
        planned = session.one_as(JobRow, "get_sync_job", job_id=job.id)
    assert planned is not None
    if not created:
        return Planned(planned, _planned_max_attempts(db, planned, max_attempts))
    return Planned(planned, max_attempts)


def _planned_max_attempts(db: Database, job: JobRow, default: int) -> int:
    row = db.one("job_max_attempts", job.business_id, job_id=job.id)
    return int(row["max_attempts"]) if row else default


def _current_tree(
    db: Database, graph: GraphClient, job: JobRow, store: StoreRow
) -> list[FolderRow]:
    """The mailbox's folders, recorded: from the store's folder deltaLink (one request when
    nothing changed: the rows as they are), else the whole tree (a first sync, ``--full``,
    an expired or foreign link). The folder deltaLink is stored with the tree it led to."""
    mailbox, link = store.mailbox, store.folders_delta_link
    if job.force_full or (link is not None and not graph.serves(link)):
        link = None
    names = _well_known_names(db, graph, job, mailbox, ask=link is None)
    try:
        delta = folder_tree_delta(graph, mailbox, link)
    except SyncStateExpiredError as exc:
        logger.warning(
            "mailbox %s: folder delta state expired (%s); reading the tree", mailbox, exc
        )
        link, delta = None, folder_tree_delta(graph, mailbox, None)
    if link is not None and not delta.changed and not delta.removed:
        return db.all_as(FolderRow, "live_folders", job.business_id, store_id=job.store_id)
    if link is None:
        raws = {raw["id"]: raw for raw in delta.changed}
        folders = tree_of(raws, names())
    else:
        folders = _merged_tree(db, job, delta)
    if not folders:
        raise InvalidInputError(f"mailbox {mailbox} lists no folders")
    return _record_folders(db, job, folders, delta_link=delta.delta_link)


def _well_known_names(
    db: Database, graph: GraphClient, job: JobRow, mailbox: str, *, ask: bool
) -> Callable[[], dict[str, str]]:
    """The labels of the well-known folders (graph id → inbox, sentitems), to call once the
    tree is read. They only label folders (mail_folders.well_known_name), and a folder id
    does not change, so they are asked once per store: a store whose folders carry them
    already (a ``--full`` sync, an expired folder delta) asks nothing. Else (a first sync)
    both requests run beside the folder delta, in a thread, instead of after it: at Graph's
    latency, two round trips off every first sync (the upsert keeps a label it is not
    given, so labels asked late are never lost)."""
    if not ask:  # needed only if the folder delta's link has expired: then, one by one
        return lambda: _stored_names(db, job) or well_known_ids(graph, mailbox)
    if named := _stored_names(db, job):
        return lambda: named
    aside = graph.fork()  # its requests are counted apart, then charged to ``graph``
    pool = ThreadPoolExecutor(1, thread_name_prefix="well-known-names")
    asked = pool.submit(well_known_ids, aside, mailbox)
    pool.shutdown(wait=False)  # the thread ends with its requests

    def names() -> dict[str, str]:
        try:
            return shutdown.result(asked)
        finally:
            graph.api_calls += aside.api_calls
            graph.throttled += aside.throttled

    return names


def _stored_names(db: Database, job: JobRow) -> dict[str, str]:
    known = db.all_as(FolderRow, "live_folders", job.business_id, store_id=job.store_id)
    return {row.graph_id: row.well_known_name for row in known if row.well_known_name}


def _merged_tree(db: Database, job: JobRow, delta: FolderTreeDelta) -> list[Folder]:
    """The tree as stored, with the folder delta's changes applied (paths recomputed: a
    folder's path follows its parent's)."""
    known = db.all_as(FolderRow, "live_folders", job.business_id, store_id=job.store_id)
    raws: dict[str, dict[str, Any]] = {  # Graph's folder objects: the delta's changes merge in
        row.graph_id: {
            "id": row.graph_id,
            "parentFolderId": row.parent_graph_id,
            "displayName": row.display_name,
            "isHidden": row.is_hidden,
            "totalItemCount": row.total_item_count,
        }
        for row in known
    }
    named = {row.graph_id: row.well_known_name for row in known if row.well_known_name}
    for raw in delta.changed:
        raws[raw["id"]] = {**raws.get(raw["id"], {}), **raw}
    for gone in delta.removed:
        raws.pop(gone, None)
    return tree_of(raws, named)


def _record_folders(
    db: Database, job: JobRow, folders: list[Folder], *, delta_link: str | None = None
) -> list[FolderRow]:
    """Upsert the listed folders; with a whole-mailbox listing, tombstone the missing (and
    keep the folder deltaLink that listed them, in the same transaction)."""
    with db.transaction(job.business_id) as session:
        rows = session.all_as(
            FolderRow,
            "upsert_mail_folders",
            business_id=job.business_id,
            store_id=job.store_id,
            folders=[f.as_json() for f in folders],
        )
        if job.folder.lower() == "all":
            session.all(
                "tombstone_missing_folders",
                store_id=job.store_id,
                seen=[f.graph_id for f in folders],
            )
            if delta_link is not None:
                session.execute(
                    "set_folders_delta_link", store_id=job.store_id, delta_link=delta_link
                )
    order = {f.graph_id: i for i, f in enumerate(folders)}
    return sorted(rows, key=lambda row: order[row.graph_id])


def _plan_folder(graph: GraphClient, job: JobRow, store: StoreRow, folder: FolderRow) -> FolderPlan:
    folder_id, link = folder.graph_id, folder.delta_link
    if link is not None and not graph.serves(link):
        # Kept from another Graph host (MAILSYNC_GRAPH_URL changed: another simulator, a
        # proxy, a national cloud): the token may not go there, and that host's delta state
        # means nothing here. The folder is read from scratch, as after Graph's 410.
        logger.warning(
            "folder %s: its deltaLink is for %s, not %s; reading it in full",
            folder.path, urlsplit(link).netloc, urlsplit(graph.base_url).netloc,
        )  # fmt: skip
        link = None
    if not (job.windowed or job.force_full or link is None):
        return FolderPlan(folder_id, full=False, estimated=0, start_link=link)
    if not job.windowed and folder.total_item_count is not None:
        # The tree's own count: the round lists the whole folder, and its last chunk runs
        # to the end whatever the estimate said (no $count request per folder).
        return FolderPlan(folder_id, full=True, estimated=folder.total_item_count, start_link=None)
    count = graph.count_messages(
        store.mailbox, folder_id, graph_time(job.sync_from), graph_time(job.sync_to)
    )
    return FolderPlan(folder_id, full=True, estimated=count, start_link=None)


def _ask_rounds(
    graph: GraphClient,
    mailbox: str,
    job: JobRow,
    plans: list[FolderPlan],
    prefetch: PagePrefetch | None,
) -> tuple[list[FolderPlan], list[dict[str, str]]]:
    """Every incremental folder's round, asked at once (``$batch``): the plans that still
    need a chunk, and the new deltaLinks of the folders whose round came back empty. A
    failed item (an expired token, throttling past every retry, a quota) leaves its plan as
    it was: its chunk meets the error and does what it does today (restarts the round from
    scratch, counted in ``delta_resets``; retries; falls back to a listing)."""
    asked = {p.folder_id: p.start_link for p in plans if not p.full and p.start_link}
    if not asked:
        return plans, []
    answers = get_many(graph, mailbox, asked, max_page_size=job.page_size)
    kept: list[FolderPlan] = []
    unchanged: list[dict[str, str]] = []
    for plan in plans:
        answer = answers.get(plan.folder_id)
        if answer is None:
            kept.append(plan)
        elif answer.body is not None and (link := _empty_round(graph, answer.body)):
            unchanged.append({"folder_id": plan.folder_id, "delta_link": link})
        else:
            if answer.error is not None:
                logger.info(
                    "folder %s: its round, asked in a batch: %s", plan.folder_id, answer.error
                )
            elif answer.body is not None and prefetch is not None and plan.start_link:
                _hand_over(graph, prefetch, plan.start_link, job.page_size, answer.body)
            kept.append(plan)
    return kept, unchanged


def _hand_over(
    graph: GraphClient, prefetch: PagePrefetch, link: str, page_size: int, body: dict[str, Any]
) -> None:
    """The round's first page, from the batch, for the folder's chunk: the request it would
    make again (one a changed folder). A page that does not parse is not offered: the chunk
    asks for it and meets what is wrong with it, as it would have."""
    try:
        page = page_from_body(graph, body)
    except BadDataError:
        return
    prefetch.offer(graph, link, page_size, fetch_page, page, page.delta_link)


def _empty_round(graph: GraphClient, body: dict[str, Any]) -> str | None:
    """The new deltaLink of a round that is one page with nothing in it; None otherwise."""
    if body.get("value") != [] or "@odata.nextLink" in body:
        return None
    return graph.link(body, "@odata.deltaLink")


def chunk_rows(
    plans: list[FolderPlan], chunk_size: int, page_size: int, *, windowed: bool
) -> list[dict[str, Any]]:
    """The job's chunks, in the order they run: folder by folder, a full folder's round
    cut into chunks by its count (an empty folder still needs its one chunk, for its
    deltaLink), an incremental folder in one; a window's folders in keyset chunks.

    A delta chunk ends after a whole page (a round cannot stop mid-page): its share is
    ``chunk_size`` rounded up to whole pages. Each delta chunk also names where the next
    folder's round starts (``next_round``): its first page is requested as soon as this
    folder's round ends, while this folder's last pages are written (mailsync.sync.rounds).
    Every chunk of the folder names it, since the round may end before its last chunk."""
    if not windowed:
        chunk_size = math.ceil(chunk_size / page_size) * page_size
    chunks: list[dict[str, Any]] = []

    def add(**chunk: Any) -> None:
        chunks.append({"chunk_index": len(chunks) + 1, "checkpoint_data": {}, **chunk})

    for at, plan in enumerate(plans):
        following = plans[at + 1] if at + 1 < len(plans) else None
        count = max(1, math.ceil(plan.estimated / chunk_size)) if plan.full else 1
        round_start: dict[str, Any] = {
            "start_link": plan.start_link,
            "mode": "initial" if plan.full else "incremental",
        }
        if following is not None:
            round_start["next_round"] = {
                "folder_id": following.folder_id,
                "start_link": following.start_link,
            }
        for i in range(count):
            estimated = chunk_size if i < count - 1 else plan.estimated - chunk_size * i
            add(
                kind="window" if windowed else "delta",
                folder_id=plan.folder_id,
                estimated_emails=max(estimated, 0),
                last_in_folder=i == count - 1,
                checkpoint_data={} if windowed else round_start,
            )
    return chunks


def _presume_removed(session: Session, job: JobRow, plans: list[FolderPlan]) -> None:
    for plan in plans:
        if plan.full:
            session.execute(
                "presume_folder_removed",
                job_id=job.id,
                store_id=job.store_id,
                folder_id=plan.folder_id,
                since=job.sync_from,
                until=job.sync_to,
            )
    if job.folder.lower() == "all":
        session.execute("presume_tombstoned_removed", job_id=job.id, store_id=job.store_id)


def _sync_type(job: JobRow, plans: list[FolderPlan]) -> str:
    if job.windowed:
        return "date_range"
    return "full" if any(plan.full for plan in plans) else "incremental"
