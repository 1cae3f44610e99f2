"""The database seam: a pool, transactions that carry the tenant, and named queries.

Callers never see psycopg's exceptions: they become ``DatabaseError`` here, with the URL's
password removed. Every statement comes from ``sql/queries.sql`` by name.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, Generic, TypeVar
from uuid import UUID

import psycopg
from psycopg import sql as pgsql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from mailsync.errors import (
    ConfigError,
    ConflictError,
    DatabaseError,
    LeaseLostError,
    MailsyncError,
    StatementError,
)
from mailsync.sql import queries
from mailsync.store import roles
from mailsync.store.rows import MissingColumnsError, TypedRow, typed_row

Row = dict[str, Any]
R = TypeVar("R", bound=TypedRow)
T = TypeVar("T")

LEASE_LOST = "MSL01"  # the SQLSTATE of a page fence whose claim is gone (migration 0012)
MAX_IDLE_S = 120.0  # a pool connection idle this long (beyond min_size) is closed,
MAX_LIFETIME_S = 15 * 60.0  # and every one is replaced after this long (±5%)


def redact_url(url: str) -> str:
    """The URL without its password, for messages and output."""
    # URL form: the password runs to the authority's last '@' (a literal '@' in it is a
    # mistake, but one that must not leak the rest), and the user may be empty.
    url = re.sub(r"(://[^:/@?#]*):[^/?#]+@", r"\1:***@", url)
    return re.sub(r"(password\s*=\s*)('[^']*'|[^\s&]+)", r"\1***", url)  # key=value, query


def _adapt(params: dict[str, Any]) -> dict[str, Any]:
    return {k: Jsonb(v) if isinstance(v, dict | list) else v for k, v in params.items()}


def translate_error(exc: psycopg.Error, where: str) -> MailsyncError:
    """psycopg's error as ours: decided here, once, so no caller imports psycopg.

    A lost connection, a restart, a deadlock or a serialization failure is worth another
    try (``DatabaseError``); a unique key that refuses a row is a ``ConflictError``; a page
    fence that found its claim gone (``LEASE_LOST``) is a ``LeaseLostError``; any other
    refusal (a constraint, a value, a privilege, the SQL) is a ``StatementError``.
    """
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if exc.sqlstate == LEASE_LOST:
        return LeaseLostError(first_line)
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return ConflictError(f"conflict in the database ({where}): {first_line}")
    if isinstance(exc, psycopg.OperationalError):
        return DatabaseError(f"database error ({where}): {exc}")
    return StatementError(f"the database refused a statement ({where}): {first_line}")


@contextmanager
def connect(url: str, timeout_s: int = 10, **kwargs: Any) -> Iterator[psycopg.Connection[Any]]:
    """A connection of its own, outside the pool (migrations, role checks, locks), failing
    fast and clearly on a bad DSN or an unreachable server, with the password removed."""
    try:
        conn = psycopg.connect(url, connect_timeout=timeout_s, **kwargs)
    except psycopg.ProgrammingError as exc:  # the DSN itself does not parse
        raise ConfigError(f"invalid database URL {redact_url(url)!r}: {exc}") from None
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseError(
            f"cannot connect to the database at {redact_url(url)}: {reason}"
        ) from None
    with conn:
        yield conn


def check_connectable(url: str, timeout_s: int = 10) -> None:
    """Fail fast, and clearly, on a bad DSN or an unreachable server."""
    with connect(url, timeout_s):
        pass


class Pending(Generic[T]):
    """A statement sent in a pipelined transaction (``Session.send``) and its rows, once
    they have come."""

    def __init__(self, cursor: psycopg.Cursor[T]) -> None:
        self._cursor: psycopg.Cursor[T] | None = cursor
        self._rows: list[T] = []

    def one(self) -> T | None:
        """The statement's row (or None). Read inside the transaction, it costs a round trip
        for everything sent so far; after it, nothing: the commit's trip brought it."""
        rows = self.all()
        return rows[0] if rows else None

    def all(self) -> list[T]:
        """Every row of the statement (read as ``one`` is)."""
        if self._cursor is not None:
            with self._cursor as cur:
                try:
                    self._rows = cur.fetchall()  # pipelined: waits for the answer first
                except psycopg.ProgrammingError as exc:
                    # The server refused it, or its rows lack columns: not ours to hide.
                    if exc.sqlstate is not None or isinstance(exc, MissingColumnsError):
                        raise
                    self._rows = []  # the statement returns no rows
            self._cursor = None
        return self._rows


class Session:
    """One connection inside one transaction.

    In a pipelined transaction (``Database.pipelined``) statements travel together:
    ``execute`` and ``send`` only queue theirs, and the first thing that needs an answer
    (``one``, ``all``, a ``Pending`` row read inside the block, a COPY, the commit) takes
    one round trip for everything queued before it. A statement that fails there fails the
    transaction: nothing queued after it runs, and the commit does not happen.
    """

    def __init__(self, conn: psycopg.Connection[Row], *, pipelined: bool = False) -> None:
        self.conn = conn
        self.pipelined = pipelined
        self.sent: list[Pending[Any]] = []
        self._pipeline: ExitStack | None = None  # the pipeline mode block we are in

    def one(self, query: str, /, **params: Any) -> Row | None:
        return self.send(query, **params).one()

    def one_as(self, cls: type[R], query: str, /, **params: Any) -> R | None:
        """``one``'s row as ``cls`` (mailsync.store.rows)."""
        return self.send_as(cls, query, **params).one()

    def all(self, query: str, /, **params: Any) -> list[Row]:
        with self.conn.cursor() as cur:
            cur.execute(queries[query], _adapt(params))
            return cur.fetchall() if cur.description else []

    def all_as(self, cls: type[R], query: str, /, **params: Any) -> list[R]:
        """``all``'s rows as ``cls`` (mailsync.store.rows)."""
        with self.conn.cursor(row_factory=typed_row(cls)) as cur:
            cur.execute(queries[query], _adapt(params))
            return cur.fetchall() if cur.description else []

    def execute(self, query: str, /, **params: Any) -> int:
        """Run a statement; its row count (-1 when pipelined: not known yet)."""
        if self.pipelined:
            self.send(query, **params)
            return -1
        with self.conn.cursor() as cur:
            cur.execute(queries[query], _adapt(params))
            return cur.rowcount

    def send(self, query: str, /, **params: Any) -> Pending[Row]:
        """Run a statement whose row is read later (``Pending.one``): when pipelined, it
        travels with the next round trip."""
        return self._pending(self.conn.cursor(), query, params)

    def send_as(self, cls: type[R], query: str, /, **params: Any) -> Pending[R]:
        """``send``, its row read as ``cls`` (mailsync.store.rows)."""
        return self._pending(self.conn.cursor(row_factory=typed_row(cls)), query, params)

    def _pending(self, cur: psycopg.Cursor[T], query: str, params: dict[str, Any]) -> Pending[T]:
        cur.execute(queries[query], _adapt(params))
        pending = Pending(cur)
        if self.pipelined:
            self.sent.append(pending)
        return pending

    def copy_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        types: Sequence[str] | None = None,
    ) -> None:
        """COPY rows into a table (the bulk path, used for staging). With the columns'
        ``types``, a binary COPY: text goes as its UTF-8 bytes, nothing escaped on either
        side (about half the CPU of text COPY for kilobytes of html per row). Pipelined,
        what was queued goes first (libpq has no COPY in pipeline mode)."""
        copy_sql = pgsql.SQL("COPY {} ({}) FROM STDIN{}").format(
            pgsql.Identifier(table),
            pgsql.SQL(", ").join(pgsql.Identifier(c) for c in columns),
            pgsql.SQL(" (FORMAT BINARY)" if types is not None else ""),
        )
        with self.outside_pipeline(), self.conn.cursor() as cur, cur.copy(copy_sql) as copy:
            if types is not None:
                copy.set_types(list(types))
            for row in rows:
                copy.write_row(row)

    @contextmanager
    def outside_pipeline(self) -> Iterator[None]:
        """For a COPY, which libpq has not in pipeline mode: what was queued goes first, and
        the block runs outside the pipeline (entered again after it, when it succeeds)."""
        pipelined = self._pipeline is not None
        if pipelined:
            self._leave_pipeline()
        yield
        if pipelined:
            self._enter_pipeline()

    @contextmanager
    def _pipeline_mode(self) -> Iterator[None]:
        """Pipeline mode for the block (left and entered again around a COPY); leaving it
        sends what is queued and raises the error of a statement that failed."""
        self._enter_pipeline()
        try:
            yield
        except BaseException:
            self._leave_pipeline(sys.exc_info())
            raise
        self._leave_pipeline()

    def _enter_pipeline(self) -> None:
        stack = ExitStack()
        stack.enter_context(self.conn.pipeline())
        self._pipeline = stack

    def _leave_pipeline(self, exc_info: Any = (None, None, None)) -> None:
        stack, self._pipeline = self._pipeline, None
        if stack is not None:
            stack.__exit__(*exc_info)


class Database:
    """A pool whose connections act as ``role`` (``mailsync_worker`` by default), never as a
    login that bypasses row-level security (mailsync.store.roles, docs/security.md)."""

    def __init__(
        self,
        url: str,
        *,
        max_size: int = 4,
        connect_timeout_s: int = 10,
        role: str | None = roles.WORKER,
    ) -> None:
        self.url = url
        with connect(url, connect_timeout_s, autocommit=True) as conn:
            try:
                self.role = roles.acting_role(conn, role)  # None: the login itself
            except psycopg.Error as exc:
                reason = f"cannot check the database roles at {redact_url(url)}: {exc}"
                raise DatabaseError(reason) from None
        # A liveness check at each checkout (a round trip, ~0.1 ms): a connection that died
        # while idle (a restart, a killed backend) is replaced before anyone uses it. Without
        # it, a dead connection surfaced in places that do not retry (opening or closing a
        # job) after a Postgres restart, and the sync exited instead of going on; ~0.1 ms
        # per transaction is 20-odd ms in a 100,000-message sync.
        self.pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"row_factory": dict_row, "connect_timeout": connect_timeout_s},
            configure=self._configure,
            check=ConnectionPool.check_connection,
            max_idle=MAX_IDLE_S,
            max_lifetime=MAX_LIFETIME_S,
            open=True,
            name="mailsync",
        )

    def _configure(self, conn: psycopg.Connection[Row]) -> None:
        """Each new connection of the pool acts as the pool's role for its whole life."""
        if self.role is not None:
            roles.set_role(conn, self.role)
            conn.commit()

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    @contextmanager
    def transaction(self, business_id: UUID | str | None = None) -> Iterator[Session]:
        """A transaction, committed on a normal exit, rolled back on an exception.

        With a business, the tenant is set for this transaction only (``app.business_id``),
        which the row-level security policies read; without one, tenant tables show no rows.
        """
        with self._transaction(business_id, None) as session:
            yield session

    @contextmanager
    def reporting_transaction(self, business_id: UUID | str) -> Iterator[Session]:
        """A transaction that reads one tenant's rows as ``mailsync_reporting`` (no writes)."""
        with self._transaction(business_id, roles.REPORTING) as session:
            yield session

    @contextmanager
    def maintenance_transaction(self) -> Iterator[Session]:
        """A transaction over every tenant's rows, as ``mailsync_maintenance`` (BYPASSRLS).

        Cross-tenant on purpose: cleanup (recovery, retention) and all-tenant reports only.
        The login must be allowed to take the role (ConfigError otherwise).
        """
        with self._transaction(None, roles.MAINTENANCE) as session:
            yield session

    @contextmanager
    def pipelined(
        self, business_id: UUID | str | None = None, *, job_id: UUID | None = None
    ) -> Iterator[Session]:
        """A transaction whose statements travel together (``Session``): the begin, the
        tenant and what the caller queues go with the first answer it needs, the rest with
        the commit as the block ends (instead of a round trip each, and a psycopg
        transaction's extra two); rows of ``send`` can be read after the block.

        The tenant is ``business_id``; or, when the caller knows only a job, that job's
        business (``job_business_id``, the one cross-tenant question, asked in the same
        trip). A given ``business_id`` wins: another business's job stays invisible.
        """
        with self._connection() as conn:
            # BEGIN and COMMIT are ours, queued with the statements: psycopg's own
            # transaction would wait for its BEGIN, then for its COMMIT, in trips of their own.
            conn.autocommit = True
            session = Session(conn, pipelined=True)
            try:
                with session._pipeline_mode():
                    conn.execute("BEGIN")
                    if business_id is not None:
                        roles.set_tenant(conn, business_id)
                    elif job_id is not None:
                        conn.execute(queries["set_tenant_of_job"], {"job_id": job_id})
                    yield session
                    conn.execute("COMMIT")
                for pending in session.sent:  # all here now: read before the connection goes
                    pending.one()
            finally:
                if not conn.closed:
                    if conn.info.transaction_status != TransactionStatus.IDLE:
                        conn.rollback()  # the block raised, or a statement failed
                    conn.autocommit = False

    @contextmanager
    def _transaction(self, business_id: UUID | str | None, role: str | None) -> Iterator[Session]:
        with self._connection() as conn, conn.transaction():
            if role is not None:
                roles.set_local_role(conn, role)
            if business_id is not None:
                roles.set_tenant(conn, business_id)
            yield Session(conn)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Row]]:
        """A connection of the pool, psycopg's errors translated."""
        conn: psycopg.Connection[Row] | None = None
        try:
            with self.pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise DatabaseError(
                f"no database connection available ({self.safe_url}): {exc}"
            ) from None
        except MissingColumnsError:
            raise  # ours, a programming error: not the database's
        except psycopg.Error as exc:
            if conn is not None and conn.closed:
                # The server restarted or dropped us: the pool's idle connections are likely
                # dead too. Replace them now, not one checkout at a time.
                self.pool.check()
            raise translate_error(exc, self.safe_url) from exc

    # One statement in a transaction of its own is pipelined: the begin, the tenant, the
    # statement and the commit travel in one round trip (plus the pool's liveness check),
    # instead of one each. These helpers carry most of a quiet sync's statements (the
    # Graph limits' two per request, the job's reads), and each round trip is CPU on both
    # sides (with the fetch task skipped, a no-change cycle went from 88 to 53 ms of CPU a
    # mailbox, process and Postgres: docs/benchmark.md, issue 23).
    def one(
        self, query: str, business_id: UUID | str | None = None, /, **params: Any
    ) -> Row | None:
        with self.pipelined(business_id) as session:
            pending = session.send(query, **params)
        return pending.one()

    def all(self, query: str, business_id: UUID | str | None = None, /, **params: Any) -> list[Row]:
        with self.pipelined(business_id) as session:
            pending = session.send(query, **params)
        return pending.all()

    def one_as(
        self, cls: type[R], query: str, business_id: UUID | str | None = None, /, **params: Any
    ) -> R | None:
        with self.pipelined(business_id) as session:
            pending = session.send_as(cls, query, **params)
        return pending.one()

    def all_as(
        self, cls: type[R], query: str, business_id: UUID | str | None = None, /, **params: Any
    ) -> list[R]:
        with self.pipelined(business_id) as session:
            pending = session.send_as(cls, query, **params)
        return pending.all()

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
