"""Secrets stay secret: the client secret and every access token of a real sync run appear in
no log line, no Prefect artifact, log or run record, and no column of any table; a refused
secret fails clearly without echoing it; only the configured hosts ever receive it.

The simulator is given a secret of the test's own and records every token it issues.
"""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil
import secrets
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

import mailsync.flows as flows
from mailsync.errors import AuthError, DatabaseError, InvalidInputError
from mailsync.flows.sync_mailbox import sync_mailbox
from mailsync.runtime import SECRET_BLOCK, reset_runtime
from mailsync.simulator import GraphSimulator

MAILBOX = "ada@contoso.example"


class RecordingSimulator(GraphSimulator):
    """The simulator, remembering every access token its token endpoint issued."""

    def __init__(self, client_secret: str) -> None:
        super().__init__(client_secret=client_secret)
        self.issued: list[str] = []

    def issue_token(self) -> str:
        token = super().issue_token()
        self.issued.append(token)
        return token


@pytest.fixture()
def secret() -> str:
    return f"Sec.{secrets.token_urlsafe(24)}~"  # distinctive: found only where it leaked


@pytest.fixture()
def sim(secret: str, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with RecordingSimulator(secret) as simulator:
        monkeypatch.setenv("MAILSYNC_TENANT_ID", "contoso-secrets")
        monkeypatch.setenv("MAILSYNC_CLIENT_ID", simulator.client_id)
        monkeypatch.setenv("MAILSYNC_CLIENT_SECRET", secret)
        monkeypatch.setenv("MAILSYNC_GRAPH_URL", simulator.url)
        reset_runtime()
        yield simulator
        reset_runtime()


# -- where a secret could end up ------------------------------------------------------------


def database_leaks(url: str, needles: list[str]) -> list[str]:
    """``table.column`` of every text, varchar, json or jsonb column holding a needle."""
    found = []
    with psycopg.connect(url) as conn:  # the superuser: every row of every tenant
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema()"
            "   AND data_type IN ('text', 'character varying', 'json', 'jsonb')"
        ).fetchall()
        for table, column in columns:
            query = sql.SQL(
                "SELECT count(*) FROM {} AS t, unnest(%s::text[]) AS needle"
                " WHERE strpos(t.{}::text, needle) > 0"
            ).format(sql.Identifier(table), sql.Identifier(column))
            if conn.execute(query, (needles,)).fetchone()[0]:
                found.append(f"{table}.{column}")
    assert len(columns) > 20  # the scan really looked at the schema
    return found


def prefect_records(flow_run_id: UUID, artifacts_at_least: int) -> list[str]:
    """The run as Prefect keeps it: the flow run, its task runs, artifacts and logs, as JSON."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # the run's last log lines, sent now
    runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        records: list[Any] = [client.read_flow_run(flow_run_id)]
        records += client.read_task_runs(flow_run_filter=runs)
        artifacts = client.read_artifacts(flow_run_filter=runs)
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    assert len(artifacts) >= artifacts_at_least and logs
    return [json.dumps(r.model_dump(mode="json")) for r in records + artifacts + logs]


def capture_everything(caplog: pytest.LogCaptureFixture) -> None:
    """Every logger at DEBUG: msal's, httpx's, psycopg's, and Prefect's run loggers (which
    the test session quiets to WARNING)."""
    for name in (None, "prefect", "prefect.flow_runs", "prefect.task_runs"):
        caplog.set_level(logging.DEBUG, logger=name)


def leaks(texts: list[str], needles: list[str]) -> list[str]:
    return [text[:200] for text in texts for needle in needles if needle in text]


# -- the tests ------------------------------------------------------------------------------


def test_a_sync_leaks_neither_the_secret_nor_a_token(
    sim: RecordingSimulator,
    secret: str,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    capture_everything(caplog)
    sim.add_mailbox(MAILBOX, 900, seed=43)
    sim.faults.expire_tokens_after_pages = 4  # the run needs a second token
    state = sync_mailbox(
        mailbox=MAILBOX, chunk_size=300, page_size=100, graph_url=sim.url, return_state=True
    )
    summary = state.result()
    assert summary["status"] == "completed" and summary["emails_stored"] == 900
    assert len(sim.issued) >= 2 and sim.stats.by_status.get(401, 0) >= 1  # a refresh happened
    needles = [secret, *sim.issued]

    captured = capfd.readouterr()
    printed = [caplog.text, captured.out, captured.err]
    printed += [record.getMessage() for record in caplog.records]
    assert any("chunk" in text for text in printed)  # the capture really saw the run's lines
    assert leaks(printed, needles) == []
    # The mailbox's table artifact at least; its text, as every other record's, clean.
    assert leaks(prefect_records(state.state_details.flow_run_id, 1), needles) == []
    assert database_leaks(database_url, needles) == []


def test_a_refused_secret_fails_clearly_without_being_echoed(
    sim: RecordingSimulator,
    secret: str,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = f"Wrong.{secrets.token_urlsafe(24)}~"
    monkeypatch.setenv("MAILSYNC_CLIENT_SECRET", wrong)
    reset_runtime()
    capture_everything(caplog)
    sim.add_mailbox(MAILBOX, 50, seed=44)
    state = sync_mailbox(mailbox=MAILBOX, graph_url=sim.url, return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, AuthError)
    assert "invalid_client" in str(error) and "AADSTS7000215" in str(error)
    assert sim.issued == [] and sim.stats.token_requests >= 1

    needles = [wrong, secret]
    captured = capfd.readouterr()
    printed = [caplog.text, captured.out, captured.err, str(error), repr(error)]
    assert leaks(printed, needles) == []
    assert leaks(prefect_records(state.state_details.flow_run_id, 1), needles) == []
    assert database_leaks(database_url, needles) == []
    with psycopg.connect(database_url) as conn:  # the job says why it failed, in its words
        status, category, message = conn.execute(
            "SELECT status, error_category, error_message FROM sync_queue"
        ).fetchone()
    assert (status, category) == ("failed", "auth") and "invalid_client" in message


def test_no_flow_takes_a_secret_as_a_parameter() -> None:
    suspicious = ("secret", "token", "password", "credential", "key")
    found = []
    for module_info in pkgutil.iter_modules(flows.__path__):
        module = importlib.import_module(f"mailsync.flows.{module_info.name}")
        for value in vars(module).values():
            parameters = getattr(getattr(value, "parameters", None), "properties", None)
            if isinstance(parameters, dict):
                found.append(value.name)
                assert not [p for p in parameters if any(w in p.lower() for w in suspicious)]
    assert "sync-mailbox" in found


def test_the_secret_can_live_in_the_prefect_secret_block(
    sim: RecordingSimulator, secret: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret

    monkeypatch.delenv("MAILSYNC_CLIENT_SECRET")
    reset_runtime()
    Secret(value=secret).save(SECRET_BLOCK, overwrite=True)
    try:
        sim.add_mailbox(MAILBOX, 60, seed=45)
        summary = sync_mailbox(mailbox=MAILBOX, graph_url=sim.url)
        assert summary["status"] == "completed" and summary["emails_stored"] == 60
        assert database_leaks(database_url, [secret, *sim.issued]) == []
    finally:
        Secret.delete(SECRET_BLOCK)


def test_a_graph_url_parameter_cannot_send_the_secret_elsewhere(
    sim: RecordingSimulator, secret: str, database_url: str
) -> None:
    sim.add_mailbox(MAILBOX, 10, seed=46)
    with RecordingSimulator(secret) as elsewhere:
        elsewhere.add_mailbox(MAILBOX, 10, seed=46)
        sneaky = elsewhere.url.replace("http://", "http://user:pa55word@")
        for url in (elsewhere.url, sneaky):
            with pytest.raises(InvalidInputError, match="not the configured Graph host") as bad:
                sync_mailbox(mailbox=MAILBOX, graph_url=url)
            assert "pa55word" not in str(bad.value)
        assert elsewhere.stats.total == 0  # not even a token request
    assert sim.stats.total == 0
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM sync_queue").fetchone()[0] == 0


def test_database_urls_are_shown_without_their_password(
    sim: RecordingSimulator, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailsync.cli import app
    from mailsync.store.db import check_connectable

    password = f"pw-{secrets.token_hex(8)}"
    # The embedded server trusts local connections: a password is accepted and ignored.
    params = conninfo_to_dict(database_url) | {"password": password}
    monkeypatch.setenv("MAILSYNC_DATABASE_URL", make_conninfo(**params))
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0 and "password=***" in result.output
    assert password not in result.output
    with pytest.raises(DatabaseError) as unreachable:
        check_connectable(f"postgresql://mailsync:{password}@127.0.0.1:1/mailsync", 2)
    assert password not in str(unreachable.value) and ":***@" in str(unreachable.value)
