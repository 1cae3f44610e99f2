"""`mailsync bench --store`: what Postgres spends per stored message, and on what.

Writes N generated messages (the simulator's bodies, parsed by ``parse_message`` as the sync
parses them) through ``write_messages`` in pages, a transaction per page, as the worker role
under row-level security, into a fresh database per variant; then writes the same pages
again (an identical replay, which must write nothing). Measured: the CPU of the whole
Postgres server (postmaster and children) and the wall time, per message, for the first
write, for an explicit ``VACUUM (ANALYZE) emails`` after it (the deferred cost autovacuum
would pay; autovacuum is off for ``emails`` in these databases so it lands here and not at
random), and for the replay; plus the WAL written and the size of ``emails``.

Each variant changes one thing against ``baseline`` (the schema and queries as they are):
DDL run as the admin login after the migrations (never a patched copy of a named query: a
text replacement breaks silently when the query changes; the statements' costs measured that
way, 2026-11-29, are in docs/benchmark.md). Variants run round-robin, ``repeats`` times;
medians are reported, so that the machine's other load falls on all of them alike.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, LiteralString

from mailsync.errors import MailsyncError


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    ddl: tuple[str, ...] = ()  # run as the admin login after the migrations


@dataclass(frozen=True)
class StoreConfig:
    messages: int = 20_000
    page_size: int = 500
    repeats: int = 3
    seed: int = 1
    variants: tuple[str, ...] = ()  # empty: all


_INDEXES_BEFORE_0009 = (
    "CREATE INDEX emails_store_received ON emails (store_id, received_at)",
    "CREATE INDEX emails_internet_message_id ON emails (store_id, internet_message_id)",
    "CREATE INDEX email_attachments_created ON email_attachments (created_at)",
)
_PGLZ = (
    "ALTER TABLE emails ALTER COLUMN body SET STORAGE EXTENDED",
    "ALTER TABLE emails ALTER COLUMN body SET COMPRESSION pglz",
)
_RLS_TABLES = ("emails", "email_attachments", "email_removals")


def variants() -> list[Variant]:
    """``baseline`` is the schema as the migrations leave it; each other variant changes one
    thing (``before_0009`` puts back what migration 0009 took away, ``lean`` takes away
    everything that can be)."""
    return [
        Variant("baseline", "schema and queries as they are"),
        Variant(
            "before_0009",
            "as before 0009: bodies pglz-compressed, the three unused indexes back",
            ddl=_PGLZ + _INDEXES_BEFORE_0009,
        ),
        Variant("pglz", "bodies compressed (pglz, STORAGE EXTENDED) as before 0009", ddl=_PGLZ),
        Variant(
            "inline_uncompressed",
            "bodies EXTENDED but toast_tuple_target 8160: inline, compressed only past ~8 KB",
            ddl=(
                "ALTER TABLE emails ALTER COLUMN body SET STORAGE EXTENDED",
                "ALTER TABLE emails SET (toast_tuple_target = 8160)",
            ),
        ),
        Variant(
            "idx_received", "plus emails (store_id, received_at)", ddl=_INDEXES_BEFORE_0009[:1]
        ),
        Variant(
            "idx_imid",
            "plus emails (store_id, internet_message_id)",
            ddl=_INDEXES_BEFORE_0009[1:2],
        ),
        Variant(
            "idx_att_created",
            "plus email_attachments (created_at)",
            ddl=_INDEXES_BEFORE_0009[2:],
        ),
        Variant(
            "no_idx_folder_live",
            "without emails_store_folder_live (the removal queries need it)",
            ddl=("DROP INDEX emails_store_folder_live",),
        ),
        Variant(
            "no_rls",
            "row-level security disabled on emails, email_attachments, email_removals",
            ddl=tuple(f"ALTER TABLE {t} DISABLE ROW LEVEL SECURITY" for t in _RLS_TABLES),
        ),
        Variant(
            "rls_initplan",
            "policies compare business_id with (SELECT current_business_id()): once a query",
            ddl=tuple(
                f"ALTER POLICY tenant_isolation ON {table}"
                " USING (business_id = (SELECT current_business_id()))"
                " WITH CHECK (business_id = (SELECT current_business_id()))"
                for table in _RLS_TABLES
            ),
        ),
        Variant(
            "no_store_fk",
            "without the foreign keys (store_id, business_id) -> stores of emails, attachments",
            ddl=(
                "ALTER TABLE emails DROP CONSTRAINT emails_store_id_business_id_fkey",
                "ALTER TABLE email_attachments"
                " DROP CONSTRAINT email_attachments_store_id_business_id_fkey",
            ),
        ),
        Variant(
            "no_pkey",
            "without the primary key index on emails.id (the identity still drawn)",
            ddl=("ALTER TABLE emails DROP CONSTRAINT emails_pkey",),
        ),
        Variant(
            "fillfactor_90",
            "emails fillfactor 90 (room for HOT updates)",
            ddl=("ALTER TABLE emails SET (fillfactor = 90)",),
        ),
        Variant(
            "lean",
            "the floor: no secondary index, no RLS, no foreign key",
            ddl=(
                "DROP INDEX emails_store_folder_live",
                "ALTER TABLE emails DROP CONSTRAINT emails_store_id_business_id_fkey",
                *(f"ALTER TABLE {t} DISABLE ROW LEVEL SECURITY" for t in _RLS_TABLES),
            ),
        ),
    ]


def build_records(count: int, seed: int) -> list[Any]:
    """The messages as the sync stores them: generated, rendered as Graph JSON, parsed."""
    import orjson

    from mailsync.graph.client import SELECT_FIELDS
    from mailsync.graph.messages import parse_message
    from mailsync.simulator.generator import generate_messages

    select = SELECT_FIELDS.split(",")
    return [
        parse_message(orjson.loads(orjson.dumps(m.to_graph(select, expand_attachments=False))))
        for m in generate_messages(count, seed=seed)
    ]


def measure_variant(variant: Variant, records: Sequence[Any], page_size: int) -> dict[str, float]:
    import psycopg

    from mailsync.bench.mailbox import fresh_database, postmaster_pid, process_cpu_s
    from mailsync.store.db import Database
    from mailsync.sync.ingest import write_messages

    business_id, job_id = uuid.uuid4(), uuid.uuid4()
    pages = [records[i : i + page_size] for i in range(0, len(records), page_size)]
    n = len(records)
    with fresh_database() as url, psycopg.connect(url, autocommit=True) as admin:
        admin.execute("ALTER TABLE emails SET (autovacuum_enabled = off)")
        for statement in variant.ddl:
            admin.execute(statement.encode())  # the bench's own DDL
        pid = postmaster_pid(url)
        if pid is None:
            raise MailsyncError("bench --store needs the local (embedded) Postgres server")
        with Database(url, max_size=1) as db:
            with db.transaction(business_id) as session:
                store = session.one(
                    "upsert_store", business_id=business_id, mailbox="bench@x", folder="all"
                )
            assert store is not None

            def write_all() -> tuple[float, float, int]:
                lsn = _scalar(admin, "SELECT pg_current_wal_lsn()")
                cpu, wall = process_cpu_s(pid), time.perf_counter()
                for page in pages:
                    with db.transaction(business_id) as s:
                        write_messages(
                            s,
                            business_id=business_id,
                            store_id=store["id"],
                            job_id=job_id,
                            messages=list(page),
                        )
                cpu, wall = process_cpu_s(pid) - cpu, time.perf_counter() - wall
                wal = _scalar(admin, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", lsn)
                return cpu, wall, int(wal)

            cpu_w, wall_w, wal_w = write_all()
            cpu, wall = process_cpu_s(pid), time.perf_counter()
            admin.execute("VACUUM (ANALYZE) emails")
            cpu_v, wall_v = process_cpu_s(pid) - cpu, time.perf_counter() - wall
            cpu_r, wall_r, wal_r = write_all()
        size = _scalar(admin, "SELECT pg_total_relation_size('emails')")
    us = 1e6 / n
    return {
        "write_cpu_us": cpu_w * us,
        "vacuum_cpu_us": cpu_v * us,
        "total_cpu_us": (cpu_w + cpu_v) * us,
        "write_wall_us": wall_w * us,
        "replay_cpu_us": cpu_r * us,
        "wal_bytes": wal_w / n,
        "replay_wal_bytes": wal_r / n,
        "table_bytes": int(size) / n,
        "vacuum_wall_us": wall_v * us,
        "replay_wall_us": wall_r * us,
    }


def _scalar(conn: Any, query: LiteralString, *params: Any) -> Any:
    row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return row[0]


def run_bench_store(config: StoreConfig, log: Any = None) -> dict[str, Any]:
    chosen = [v for v in variants() if not config.variants or v.name in config.variants]
    if not chosen:
        raise MailsyncError(f"no such variant: {', '.join(config.variants)}")
    records = build_records(config.messages, config.seed)
    runs: dict[str, list[dict[str, float]]] = {v.name: [] for v in chosen}
    for repeat in range(config.repeats):
        order = chosen[repeat % len(chosen) :] + chosen[: repeat % len(chosen)]
        for variant in order:
            result = measure_variant(variant, records, config.page_size)
            runs[variant.name].append(result)
            if log is not None:
                log(f"{repeat + 1}/{config.repeats} {variant.name}: {_rounded(result)}")
    medians = {
        v.name: {
            "what": v.what,
            **_rounded({k: statistics.median(r[k] for r in runs[v.name]) for k in runs[v.name][0]}),
        }
        for v in chosen
    }
    return {
        "messages": config.messages,
        "page_size": config.page_size,
        "repeats": config.repeats,
        "variants": medians,
    }


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in values.items()}
