"""Tenant isolation in the database itself, and input hygiene, on the real PostgreSQL.

Two businesses sync real mailboxes through the flow; then each role of the security model
(migration 0004) is taken the way the application takes it (the superuser login's
``SET ROLE``) and asked for the other business's rows. The superuser reads made here to
compare bypass row-level security on purpose.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from typer.testing import CliRunner

from mailsync.errors import ConfigError, InvalidInputError
from mailsync.flows.sync_mailbox import sync_mailbox
from mailsync.store.db import Database
from mailsync.store.roles import MAINTENANCE, REPORTING, WORKER

ACME = UUID("00000000-0000-4000-8000-0000000000a1")
GLOBEX = UUID("00000000-0000-4000-8000-0000000000b2")
ADA, BOB = "ada@acme.example", "bob@globex.example"
TENANT_TABLES = (
    "stores",
    "sync_queue",
    "chunked_sync_jobs",
    "sync_state_checkpoints",
    "emails",
    "email_attachments",
    "attachment_blobs",
    "attachment_listings",
)
RELATIONS = (*TENANT_TABLES, "chunk_processing_status")
OTHER = {ACME: GLOBEX, GLOBEX: ACME}


def sync_two_tenants(simulator: Any, database_url: str) -> dict[UUID, dict[str, Any]]:
    """ACME's and GLOBEX's mailboxes synced by the flow; each tenant's job summary."""
    simulator.add_mailbox(ADA, 400, seed=31)
    simulator.add_mailbox(BOB, 300, seed=32)
    synced = {
        business: sync_mailbox(
            mailbox=mailbox,
            business_id=str(business),
            chunk_size=150,
            page_size=100,
            graph_url=simulator.url,
        )
        for business, mailbox in ((ACME, ADA), (GLOBEX, BOB))
    }
    assert all(summary["status"] == "completed" for summary in synced.values())
    for business in synced:  # every relation holds rows of both, or the test proves nothing
        assert all(rows_of(database_url, name, business) > 0 for name in RELATIONS), business
    return synced


@pytest.fixture(scope="module")
def two_tenants_template(
    pg_admin_url: str, template_db: str
) -> Iterator[tuple[str, dict[UUID, dict[str, Any]]]]:
    """A database where the two tenants were synced, once for the module (its name, the
    summaries): the tests that only read or write rows get a copy each."""
    from mailsync.runtime import reset_runtime
    from mailsync.simulator import GraphSimulator
    from tests.conftest import drop_database, with_dbname

    name = f"mailsync_tenants_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = with_dbname(pg_admin_url, name)
    with pytest.MonkeyPatch.context() as env, GraphSimulator() as simulator:
        for key, value in {  # as the simulator and database_url fixtures set them
            "MAILSYNC_DATABASE_URL": url,
            "MAILSYNC_TENANT_ID": "contoso-test",
            "MAILSYNC_CLIENT_ID": simulator.client_id,
            "MAILSYNC_CLIENT_SECRET": simulator.client_secret,
            "MAILSYNC_GRAPH_URL": simulator.url,
        }.items():
            env.setenv(key, value)
        reset_runtime()
        try:
            synced = sync_two_tenants(simulator, url)
        finally:
            reset_runtime()  # no connection left: a template must have none
    yield name, synced
    drop_database(pg_admin_url, name)


@pytest.fixture()
def two_tenants(
    two_tenants_template: tuple[str, dict[UUID, dict[str, Any]]],
    pg_admin_url: str,
    database_url: str,
) -> dict[UUID, dict[str, Any]]:
    """This test's database as a copy of the two tenants' synced one; each tenant's job
    summary. (The fixture first in a test's arguments: nothing has connected yet.)"""
    from tests.conftest import drop_database

    template, synced = two_tenants_template
    name = conninfo_to_dict(database_url)["dbname"]
    drop_database(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return synced


@pytest.fixture()
def two_tenants_synced_here(
    runtime: Any, simulator: Any, database_url: str
) -> dict[UUID, dict[str, Any]]:
    """The two tenants synced in this test, from this test's simulator (which a test that
    syncs them again needs)."""
    return sync_two_tenants(simulator, database_url)


@contextmanager
def acting_as(url: str, role: str, tenant: UUID | str | None) -> Iterator[psycopg.Connection]:
    """A connection of the (superuser) login acting as ``role`` for ``tenant``, as the
    application's pool does; autocommit, so a refused statement leaves it usable."""
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        if tenant is not None:
            conn.execute("SELECT set_config('app.business_id', %s, false)", (str(tenant),))
        yield conn


def rows_of(url: str, relation: str, business: UUID) -> int:
    """The relation's rows of one business, counted by the superuser (no RLS)."""
    with psycopg.connect(url) as conn:
        query = sql.SQL("SELECT count(*) FROM {} WHERE business_id = %s")
        row = conn.execute(query.format(sql.Identifier(relation)), (business,)).fetchone()
        return int(row[0]) if row else 0


def fingerprint(url: str, business: UUID) -> dict[str, str]:
    """A digest of every row of one business in every tenant table (superuser)."""
    with psycopg.connect(url) as conn:
        query = sql.SQL(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} AS t"
            " WHERE business_id = %s"
        )
        return {
            table: conn.execute(query.format(sql.Identifier(table)), (business,)).fetchone()[0]
            for table in TENANT_TABLES
        }


def count_all(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()[0]
            for table in TENANT_TABLES
        }


# -- reads --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [WORKER, REPORTING])
def test_a_tenant_sees_all_of_its_rows_and_none_of_the_others(
    two_tenants: dict[UUID, dict[str, Any]], database_url: str, role: str
) -> None:
    for tenant, other in OTHER.items():
        with acting_as(database_url, role, tenant) as conn:
            for relation in RELATIONS:
                counts = conn.execute(
                    sql.SQL(
                        "SELECT count(*) FILTER (WHERE business_id = %(t)s) AS own,"
                        " count(*) FILTER (WHERE business_id <> %(t)s) AS others"
                        " FROM {}"
                    ).format(sql.Identifier(relation)),
                    {"t": tenant},
                ).fetchone()
                assert counts == {"own": rows_of(database_url, relation, tenant), "others": 0}
            # Asked by id, the other tenant's job is not there either.
            other_job = two_tenants[other]["job_id"]
            progress = conn.execute("SELECT get_sync_job_progress(%s) AS p", (other_job,))
            assert progress.fetchone()["p"] is None
            own = conn.execute(
                "SELECT get_sync_job_progress(%s) AS p", (two_tenants[tenant]["job_id"],)
            ).fetchone()["p"]
            assert own["completed_chunks"] == own["total_chunks"] > 0


@pytest.mark.parametrize("role", [WORKER, REPORTING])
@pytest.mark.parametrize("tenant", [None, ""], ids=["unset", "empty"])
def test_without_a_tenant_a_tenant_role_sees_nothing(
    two_tenants: dict[UUID, dict[str, Any]], database_url: str, role: str, tenant: str | None
) -> None:
    with acting_as(database_url, role, tenant) as conn:
        for relation in RELATIONS:
            query = sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(relation))
            assert conn.execute(query).fetchone()["n"] == 0, relation


def test_a_tenant_that_is_not_a_uuid_is_an_error_not_rows(
    two_tenants: dict[UUID, dict[str, Any]], database_url: str
) -> None:
    with acting_as(database_url, WORKER, f"{ACME}' OR true --") as conn:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            conn.execute("SELECT count(*) FROM emails")


def test_the_maintenance_role_sees_every_tenant(
    two_tenants: dict[UUID, dict[str, Any]], database_url: str
) -> None:
    with acting_as(database_url, MAINTENANCE, None) as conn:
        for relation in RELATIONS:
            query = sql.SQL("SELECT count(DISTINCT business_id) AS n FROM {}")
            assert conn.execute(query.format(sql.Identifier(relation))).fetchone()["n"] == 2


# -- writes -------------------------------------------------------------------------------


def test_writes_that_name_another_tenant_are_refused(
    two_tenants: dict[UUID, dict[str, Any]], database_url: str
) -> None:
    before = fingerprint(database_url, GLOBEX)
    acme_job, globex_job = two_tenants[ACME]["job_id"], two_tenants[GLOBEX]["job_id"]
    with psycopg.connect(database_url, row_factory=dict_row) as conn:  # GLOBEX's ids (superuser)
        globex_store = conn.execute(
            "SELECT id FROM stores WHERE business_id = %s", (GLOBEX,)
        ).fetchone()["id"]
        globex_chunk = conn.execute(
            "SELECT id FROM chunked_sync_jobs WHERE business_id = %s LIMIT 1", (GLOBEX,)
        ).fetchone()["id"]
        acme_store = conn.execute(
            "SELECT id FROM stores WHERE business_id = %s", (ACME,)
        ).fetchone()["id"]
    rls = pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security")
    with acting_as(database_url, WORKER, ACME) as conn:
        with rls:  # a row of another business
            conn.execute(
                "INSERT INTO stores (business_id, name, mailbox)"
                " VALUES (%s, 'x', 'eve@globex.example')",
                (GLOBEX,),
            )
        with rls:
            conn.execute(
                "INSERT INTO emails (business_id, store_id, graph_id, received_at, content_hash)"
                " VALUES (%s, %s, 'planted', now(), 'h')",
                (GLOBEX, globex_store),
            )
        with rls:  # moving one's own rows to another business
            conn.execute(
                "UPDATE stores SET business_id = %s WHERE business_id = %s", (GLOBEX, ACME)
            )
        with rls:
            conn.execute("UPDATE emails SET business_id = %s", (GLOBEX,))
        # One's own business id, pointing at another business's rows: the composite keys.
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO emails (business_id, store_id, graph_id, received_at, content_hash)"
                " VALUES (%s, %s, 'planted', now(), 'h')",
                (ACME, globex_store),
            )
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO sync_state_checkpoints (business_id, store_id, sync_job_id,"
                " chunk_id, chunk_index, cursor, emails_processed)"
                " VALUES (%s, %s, %s, %s, 1, '{}', 0)",
                (ACME, acme_store, acme_job, globex_chunk),
            )
        # The other business's rows cannot be touched: they are not there.
        for statement in (
            "UPDATE emails SET subject = 'owned' WHERE business_id = %(other)s",
            "DELETE FROM emails WHERE business_id = %(other)s",
            "DELETE FROM email_attachments WHERE business_id = %(other)s",
            "UPDATE chunked_sync_jobs SET status = 'failed' WHERE parent_sync_job_id = %(job)s",
            "UPDATE sync_queue SET status = 'failed' WHERE id = %(job)s",
        ):
            assert conn.execute(statement, {"other": GLOBEX, "job": globex_job}).rowcount == 0
        finished = conn.execute("SELECT finish_sync_job(%s) AS s", (globex_job,)).fetchone()
        assert finished["s"] is None
    assert fingerprint(database_url, GLOBEX) == before


def test_the_state_machine_works_on_the_callers_tenant_only(
    two_tenants: dict[UUID, dict[str, Any]], database_url: str
) -> None:
    globex_job = two_tenants[GLOBEX]["job_id"]
    with psycopg.connect(database_url) as conn:  # a GLOBEX chunk whose worker died
        conn.execute(
            "UPDATE chunked_sync_jobs SET status = 'processing', worker_id = 'dead',"
            " heartbeat_at = now() - interval '1 hour' WHERE parent_sync_job_id = %s"
            " AND chunk_index = 1",
            (globex_job,),
        )
    with acting_as(database_url, WORKER, ACME) as conn:
        assert conn.execute("SELECT * FROM cleanup_stuck_chunks('1 minute')").fetchall() == []
        claimed = conn.execute(
            "SELECT * FROM claim_chunk(%s, 1, 'w', interval '1 minute')", (globex_job,)
        ).fetchall()
        assert claimed == []  # another tenant's chunk does not exist for this worker
    with acting_as(database_url, MAINTENANCE, None) as conn:  # cleanup sees every tenant
        recovered = conn.execute("SELECT * FROM cleanup_stuck_chunks('1 minute')").fetchall()
        assert [str(r["parent_sync_job_id"]) for r in recovered] == [globex_job]


def test_the_reporting_role_cannot_write(
    two_tenants: dict[UUID, dict[str, Any]], database_url: str
) -> None:
    denied = pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied")
    with acting_as(database_url, REPORTING, ACME) as conn:
        for table in TENANT_TABLES:
            name = sql.Identifier(table)
            with denied:
                conn.execute(sql.SQL("UPDATE {} SET business_id = business_id").format(name))
            with denied:
                conn.execute(sql.SQL("DELETE FROM {}").format(name))
        with denied:
            conn.execute(
                "INSERT INTO stores (business_id, name, mailbox)"
                " VALUES (%s, 'x', 'eve@acme.example')",
                (ACME,),
            )
        with denied:
            conn.execute("SELECT finish_sync_job(%s)", (two_tenants[ACME]["job_id"],))
        with denied:
            conn.execute("SELECT job_business_id(%s)", (two_tenants[GLOBEX]["job_id"],))
    assert count_all(database_url)["stores"] == 2


def test_the_worker_role_cannot_change_the_schema(database_url: str) -> None:
    denied = pytest.raises(psycopg.errors.InsufficientPrivilege)
    with acting_as(database_url, WORKER, ACME) as conn:
        for statement in (
            "CREATE TABLE planted (id int)",
            "ALTER TABLE emails NO FORCE ROW LEVEL SECURITY",
            "ALTER TABLE emails DISABLE ROW LEVEL SECURITY",
            "DROP POLICY tenant_isolation ON emails",
            "CREATE OR REPLACE FUNCTION current_business_id() RETURNS uuid"
            " LANGUAGE sql AS 'SELECT NULL::uuid'",
        ):
            with denied:
                conn.execute(statement)


# -- the schema's promises ----------------------------------------------------------------


def test_every_table_with_a_business_id_is_isolated(database_url: str) -> None:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        tables = conn.execute(
            "SELECT c.relname AS name, c.relrowsecurity AS rls, c.relforcerowsecurity AS forced,"
            "       pg_get_userbyid(c.relowner) AS owner,"
            "       (SELECT array_agg(p.polname) FROM pg_policy AS p"
            "         WHERE p.polrelid = c.oid) AS policies"
            "  FROM pg_class AS c"
            "  JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attname = 'business_id'"
            " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')"
        ).fetchall()
    assert {t["name"] for t in tables} >= set(TENANT_TABLES)
    for table in tables:
        assert table["rls"] and table["forced"], table
        assert table["policies"] == ["tenant_isolation"], table
        assert table["owner"] == "mailsync_owner", table


def test_functions_and_view_run_with_the_callers_rights(database_url: str) -> None:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        definers = conn.execute(
            "SELECT p.proname, pg_get_userbyid(p.proowner) AS owner, p.proconfig"
            "  FROM pg_proc AS p WHERE p.pronamespace = current_schema()::regnamespace"
            "   AND p.prosecdef"
        ).fetchall()
        view = conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'chunk_processing_status'"
        ).fetchone()
    # The SECURITY DEFINER functions answer "whose job is this?" and, for change
    # notifications (0017), "whose subscription is this?" and "which businesses have
    # notifications waiting?": each with a fixed path.
    assert sorted(d["proname"] for d in definers) == [
        "job_business_id",
        "notification_pending_businesses",
        "notification_subscriptions",
    ]
    for definer in definers:
        assert definer["owner"] == MAINTENANCE
        assert any(c.startswith("search_path=pg_catalog,") for c in definer["proconfig"])
    assert "security_invoker=true" in view["reloptions"]


def test_roles_are_as_documented(database_url: str) -> None:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        roles = {
            r["rolname"]: r
            for r in conn.execute(
                "SELECT rolname, rolsuper, rolbypassrls, rolcanlogin, rolcreaterole,"
                " rolcreatedb FROM pg_roles WHERE rolname LIKE 'mailsync\\_%'"
            ).fetchall()
        }
    assert set(roles) >= {"mailsync_owner", WORKER, REPORTING, MAINTENANCE}
    for name in ("mailsync_owner", WORKER, REPORTING, MAINTENANCE):
        role = roles[name]
        assert not (
            role["rolsuper"] or role["rolcanlogin"] or role["rolcreaterole"] or role["rolcreatedb"]
        ), role
        assert role["rolbypassrls"] == (name == MAINTENANCE), role


def test_upgrading_again_changes_nothing(database_url: str) -> None:
    from mailsync.store.migrate import upgrade

    assert upgrade(database_url) == []


# -- the application ----------------------------------------------------------------------


def test_the_pool_acts_as_the_worker_and_maintenance_is_explicit(
    two_tenants: dict[UUID, dict[str, Any]], runtime: Any
) -> None:
    db = runtime.db
    assert db.role == WORKER
    with db.transaction(ACME) as session:
        row = session.conn.execute(
            "SELECT current_user AS u, count(DISTINCT business_id) AS n,"
            " min(business_id::text) AS b FROM emails"
        ).fetchone()
        assert (row["u"], row["n"], row["b"]) == (WORKER, 1, str(ACME))
    with db.transaction() as session:  # no tenant: nothing
        assert session.conn.execute("SELECT count(*) AS n FROM emails").fetchone()["n"] == 0
    with db.reporting_transaction(GLOBEX) as session:
        row = session.conn.execute(
            "SELECT current_user AS u, count(DISTINCT business_id) AS n FROM emails"
        ).fetchone()
        assert (row["u"], row["n"]) == (REPORTING, 1)
    with db.maintenance_transaction() as session:
        row = session.conn.execute(
            "SELECT current_user AS u, count(DISTINCT business_id) AS n FROM emails"
        ).fetchone()
        assert (row["u"], row["n"]) == (MAINTENANCE, 2)
    with db.transaction() as session:  # SET LOCAL ROLE ended with its transaction
        assert session.conn.execute("SELECT current_user AS u").fetchone()["u"] == WORKER


def test_a_login_that_bypasses_rls_without_a_role_to_take_is_refused(database_url: str) -> None:
    with pytest.raises(ConfigError, match="bypasses row-level security"):
        Database(database_url, role="mailsync_no_such_role")


@pytest.fixture()
def app_login(database_url: str) -> Iterator[str]:
    """A least-privilege login (a member of mailsync_worker only), as an operator would
    configure DATABASE_URL; its URL."""
    name = f"mailsync_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE mailsync_worker").format(sql.Identifier(name))
        )
    params = conninfo_to_dict(database_url)
    params["user"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
            )
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_a_least_privilege_login_syncs_and_cannot_cross_tenants(
    two_tenants_synced_here: dict[UUID, dict[str, Any]],
    simulator: Any,
    database_url: str,
    app_login: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mailsync.runtime import get_runtime, reset_runtime

    monkeypatch.setenv("MAILSYNC_DATABASE_URL", app_login)
    reset_runtime()
    try:
        assert get_runtime().db.role == WORKER
        simulator.add_mailbox("cy@acme.example", 120, seed=33)
        summary = sync_mailbox(
            mailbox="cy@acme.example",
            business_id=str(ACME),
            chunk_size=50,
            page_size=50,
            graph_url=simulator.url,
        )
        assert summary["status"] == "completed" and summary["emails_stored"] == 120
        globex_job = two_tenants_synced_here[GLOBEX]["job_id"]
        reopen_from_chunk_2(database_url, globex_job)
        resumed = sync_mailbox(job_id=globex_job, graph_url=simulator.url)  # by job id only
        assert resumed["business_id"] == str(GLOBEX) and resumed["status"] == "completed"
        assert resumed["emails_stored"] == 300
        with pytest.raises(ConfigError, match="cannot act as mailsync_maintenance"):
            with get_runtime().db.maintenance_transaction():
                pass
        from mailsync.cli import app  # the CLI too: its schema check needs no DDL right

        status = CliRunner().invoke(app, ["status", summary["job_id"], "--json"])
        assert status.exit_code == 0, status.output
        assert json.loads(status.stdout.strip().splitlines()[-1])["emails_stored"] == 120
    finally:
        reset_runtime()


def reopen_from_chunk_2(url: str, job_id: str) -> None:
    """The job as if its run had stopped after chunk 1 (superuser)."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "DELETE FROM sync_state_checkpoints WHERE sync_job_id = %s AND chunk_index >= 2",
            (job_id,),
        )
        conn.execute(
            "UPDATE chunked_sync_jobs SET status = 'pending', attempts = 0,"
            " checkpoint_data = '{}' WHERE parent_sync_job_id = %s"
            " AND chunk_index >= 2",
            (job_id,),
        )
        conn.execute("UPDATE sync_queue SET status = 'running' WHERE id = %s", (job_id,))


def test_resume_and_status_by_job_id_work_as_the_jobs_tenant(
    two_tenants: dict[UUID, dict[str, Any]], simulator: Any, database_url: str
) -> None:
    from mailsync.cli import app

    runner = CliRunner()
    simulator.add_mailbox("dee@globex.example", 90, seed=34)
    synced = runner.invoke(
        app,
        [
            "sync",
            "--mailbox",
            "dee@globex.example",
            "--business",
            str(GLOBEX),
            "--chunk-size",
            "40",
            "--page-size",
            "40",
            "--json",
        ],
    )
    assert synced.exit_code == 0, synced.output
    job_id = json.loads(synced.stdout.strip().splitlines()[-1])["job_id"]
    status = runner.invoke(app, ["status", job_id, "--json"])
    assert status.exit_code == 0, status.output
    summary = json.loads(status.stdout.strip().splitlines()[-1])
    assert summary["business_id"] == str(GLOBEX)
    # the folder's round in three chunks of 40 (whole pages of 40)
    assert summary["emails_stored"] == 90 and summary["chunks_completed"] == 3
    reopen_from_chunk_2(database_url, job_id)
    resumed = runner.invoke(app, ["resume", job_id, "--json"])
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert (summary["status"], summary["emails_stored"]) == ("completed", 90)
    unknown = runner.invoke(app, ["status", str(uuid.uuid4())])
    assert isinstance(unknown.exception, InvalidInputError)
    assert "no sync job" in str(unknown.exception)


# -- input hygiene ------------------------------------------------------------------------

HOSTILE = [
    ({"mailbox": "ada';--@acme.example"}, "invalid mailbox"),
    ({"mailbox": 'ada"@acme.example'}, "invalid mailbox"),
    ({"mailbox": "../../users/bob@globex.example"}, "invalid mailbox"),
    ({"mailbox": "ada/../bob@globex.example"}, "invalid mailbox"),
    ({"mailbox": "ada%2F..%2Fbob@globex.example"}, "invalid mailbox"),
    ({"mailbox": "ada@acme.example/messages?$top=1"}, "invalid mailbox"),
    ({"mailbox": "ada@acme.example?$select=body"}, "invalid mailbox"),
    ({"mailbox": "ada@acme.example'; DROP TABLE emails; --"}, "invalid mailbox"),
    ({"folder": "inbox/../sentitems"}, "invalid folder"),
    ({"folder": "..%2Fsentitems"}, "invalid folder"),
    ({"folder": "inbox'; DELETE FROM emails; --"}, "invalid folder"),
    ({"business_id": f"{ACME}' OR '1'='1"}, "invalid business id"),
    ({"business_id": "../globex"}, "invalid business id"),
    ({"job_id": "1; DROP TABLE sync_queue"}, "invalid job id"),
    ({"job_id": f"../{ACME}"}, "invalid job id"),
]


@pytest.mark.parametrize(("params", "message"), HOSTILE, ids=lambda v: str(v)[:40])
def test_hostile_identifiers_are_refused_and_change_nothing(
    runtime: Any, simulator: Any, database_url: str, params: dict[str, str], message: str
) -> None:
    simulator.add_mailbox(ADA, 20, seed=35)
    with pytest.raises(InvalidInputError, match=message):
        sync_mailbox(**{"mailbox": ADA, **params}, graph_url=simulator.url)
    assert count_all(database_url) == dict.fromkeys(TENANT_TABLES, 0)
    assert simulator.stats.total == 0  # nothing reached Graph either


@pytest.mark.parametrize(
    "args",
    [
        ["sync", "--mailbox", "ada/../bob@globex.example"],
        ["sync", "--mailbox", ADA, "--folder", "inbox/../sentitems"],
        ["sync", "--mailbox", ADA, "--business", "'; DROP TABLE stores; --"],
        ["status", "1; DROP TABLE sync_queue"],
        ["resume", "../../etc/passwd"],
    ],
    ids=lambda a: " ".join(a)[:40],
)
def test_the_cli_refuses_hostile_identifiers(
    runtime: Any, simulator: Any, database_url: str, args: list[str]
) -> None:
    from mailsync.cli import app

    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, InvalidInputError), result.output
    assert str(result.exception).startswith("invalid ")
    assert count_all(database_url) == dict.fromkeys(TENANT_TABLES, 0)
    assert simulator.stats.total == 0
