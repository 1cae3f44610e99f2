"""The mailbox registry and sync-all, run in this process: real Postgres, the simulator over
HTTP, real Prefect flows.

Registry commands go through the CLI (typer's runner, the real commands); sync-all is the
flow as `mailsync sync-all` runs it, its syncs in threads of its task runner.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.task_runners import ThreadPoolTaskRunner
from psycopg.rows import dict_row
from typer.testing import CliRunner, Result

from mailsync.artifacts import sync_all_key
from mailsync.flows.sync_all import sync_all
from mailsync.report import build_report
from mailsync.runtime import get_runtime
from mailsync.sync.jobs import default_business_id

TENANT = "contoso-test"  # the simulator fixture's MAILSYNC_TENANT_ID
BUSINESS = default_business_id(TENANT)


def rows(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def stores(url: str) -> list[dict[str, Any]]:
    return rows(url, "SELECT * FROM stores ORDER BY mailbox")


def make_due(url: str, *mailboxes: str) -> None:
    """Move the mailboxes' next turn to the past (as time passing would)."""
    rows(
        url,
        "UPDATE stores SET next_due_at = now() - interval '1 second'"
        " WHERE mailbox = ANY(%s) RETURNING id",
        list(mailboxes),
    )


@pytest.fixture()
def cli(runtime: Any) -> Callable[..., Result]:
    from mailsync.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def run_sync_all(parallel: int = 4, **kwargs: Any) -> dict[str, Any]:
    flow = sync_all.with_options(task_runner=ThreadPoolTaskRunner(max_workers=parallel))
    return flow(chunk_size=200, page_size=100, **kwargs)  # type: ignore[no-any-return]


# -- registry commands ----------------------------------------------------------------------


def test_registry_commands_register_list_pause_resume_remove(
    cli: Callable[..., Result], database_url: str
) -> None:
    added = cli("mailbox", "add", "ada@contoso.example", "--schedule-minutes", "30", "--json")
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout.splitlines()[-1])["interval_minutes"] == 30
    assert cli("mailbox", "add", "bob@contoso.example", "--folder", "inbox").exit_code == 0
    assert cli("mailbox", "pause", "bob@contoso.example").exit_code == 0

    listed = json.loads(cli("mailbox", "list", "--json").stdout.splitlines()[-1])
    assert listed["business_id"] == BUSINESS
    by_name = {m["mailbox"]: m for m in listed["mailboxes"]}
    assert by_name["ada@contoso.example"]["health"] == "new"
    assert by_name["bob@contoso.example"]["health"] == "paused"
    assert by_name["bob@contoso.example"]["folder"] == "inbox"
    assert {str(s["business_id"]) for s in stores(database_url)} == {BUSINESS}

    assert cli("mailbox", "resume", "bob@contoso.example").exit_code == 0
    assert [s["enabled"] for s in stores(database_url)] == [True, True]
    removed = cli("mailbox", "remove", "ada@contoso.example")
    assert removed.exit_code == 0, removed.output
    ada = stores(database_url)[0]
    assert ada["mailbox"] == "ada@contoso.example" and ada["registered_at"] is None  # kept
    # A removed mailbox can be added again (the same store).
    assert cli("mailbox", "add", "ADA@contoso.example").exit_code == 0
    assert len(stores(database_url)) == 2 and stores(database_url)[0]["registered_at"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("mailbox", "add", "not a mailbox"), "invalid mailbox"),
        (("mailbox", "add", "x/../y@contoso.example"), "invalid mailbox"),
        (("mailbox", "add", "ada@contoso.example"), "already registered"),
        (("mailbox", "add", "Ada@Contoso.example"), "already registered"),
        (("mailbox", "add", "new@contoso.example", "--schedule-minutes", "0"), "invalid"),
        (("mailbox", "add", "new@contoso.example", "--folder", "../x"), "invalid folder"),
        (("mailbox", "add", "new@contoso.example", "--business", "acme"), "invalid business"),
        (("mailbox", "remove", "nobody@contoso.example"), "not registered"),
        (("mailbox", "remove", "nobody@contoso.example", "--purge"), "not registered"),
        (("mailbox", "pause", "nobody@contoso.example"), "not registered"),
        (("mailbox", "resume", "'; DROP TABLE stores; --"), "invalid mailbox"),
    ],
)
def test_bad_registry_commands_fail_clearly_and_change_nothing(
    cli: Callable[..., Result], database_url: str, args: tuple[str, ...], message: str
) -> None:
    assert cli("mailbox", "add", "ada@contoso.example").exit_code == 0
    before = stores(database_url)

    result = cli(*args)

    assert result.exit_code != 0
    said = f"{result.output} {result.exception or ''}"
    assert message in " ".join(said.split())
    assert stores(database_url) == before


def test_the_command_exits_2_with_the_message(
    cli: Callable[..., Result],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mailsync.cli import main

    monkeypatch.setattr("sys.argv", ["mailsync", "mailbox", "remove", "nobody@contoso.example"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    assert "nobody@contoso.example is not registered" in " ".join(capsys.readouterr().err.split())


def test_remove_with_purge_deletes_the_store_and_its_mail(
    cli: Callable[..., Result], simulator: Any, database_url: str
) -> None:
    simulator.add_mailbox("ada@contoso.example", 150, seed=3)
    simulator.add_mailbox("bob@contoso.example", 120, seed=4)
    for mailbox in ("ada@contoso.example", "bob@contoso.example"):
        assert cli("mailbox", "add", mailbox).exit_code == 0
    assert {m["status"] for m in run_sync_all()["mailboxes"]} == {"completed"}

    purged = cli("mailbox", "remove", "ada@contoso.example", "--purge")

    assert purged.exit_code == 0, purged.output
    assert [s["mailbox"] for s in stores(database_url)] == ["bob@contoso.example"]
    counts = rows(
        database_url,
        "SELECT (SELECT count(*) FROM emails) AS emails, (SELECT count(*) FROM sync_queue) AS jobs",
    )[0]
    assert counts == {"emails": 120, "jobs": 1}


# -- sync-all -------------------------------------------------------------------------------


def test_sync_all_syncs_the_due_mailboxes_and_records_each_outcome(
    cli: Callable[..., Result], simulator: Any, database_url: str
) -> None:
    boxes = {
        f"team{i}@contoso.example": simulator.add_mailbox(
            f"team{i}@contoso.example", 250 + 50 * i, seed=60 + i
        )
        for i in range(3)
    }
    for mailbox in boxes:
        assert cli("mailbox", "add", mailbox).exit_code == 0
    assert cli("mailbox", "add", "paused@contoso.example").exit_code == 0
    assert cli("mailbox", "pause", "paused@contoso.example").exit_code == 0

    flow = sync_all.with_options(task_runner=ThreadPoolTaskRunner(max_workers=3))
    state = flow(chunk_size=200, page_size=100, return_state=True)
    result = state.result()

    assert sorted(m["mailbox"] for m in result["mailboxes"]) == sorted(boxes)
    assert {m["status"] for m in result["mailboxes"]} == {"completed"}
    for mailbox, box in boxes.items():
        stored = rows(
            database_url,
            "SELECT e.graph_id FROM emails e JOIN stores s"
            " ON s.id = e.store_id WHERE s.mailbox = %s",
            mailbox,
        )
        assert {r["graph_id"] for r in stored} == box.ids()
    registry = {s["mailbox"]: s for s in stores(database_url)}
    for mailbox in boxes:
        store = registry[mailbox]
        assert store["last_status"] == "completed" and store["last_success_at"] is not None
        assert store["consecutive_failures"] == 0
        # The next turn is an interval after this one was claimed.
        assert store["next_due_at"] - store["last_claimed_at"] == timedelta(minutes=60)
    assert registry["paused@contoso.example"]["last_job_id"] is None
    # Nothing is due any more: a second run starts nothing.
    assert run_sync_all()["mailboxes"] == []
    # The run's table artifact: a row per mailbox, as the Prefect UI shows it.
    assert all(m["last_success"] and m["health"] == "ok" for m in result["mailboxes"])
    run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        # (each mailbox's own job table and progress are in the run too: its syncs ran in it)
        artifacts = client.read_artifacts(flow_run_filter=run_filter)
    [artifact] = [a for a in artifacts if a.key == sync_all_key(BUSINESS)]
    table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert (artifact.key, artifact.type) == (f"sync-all-{BUSINESS}", "table")
    assert sorted(row["mailbox"] for row in table) == sorted(boxes)
    assert set(table[0]) == {"mailbox", "started", "status", "messages", "last_success", "health"}
    assert {row["status"] for row in table} == {"completed"}


def test_a_failing_mailbox_backs_off_and_never_holds_up_the_others(
    cli: Callable[..., Result], simulator: Any, database_url: str
) -> None:
    simulator.add_mailbox("fine@contoso.example", 200, seed=9)
    for mailbox in ("fine@contoso.example", "gone@contoso.example"):  # gone: Graph says 404
        assert cli("mailbox", "add", mailbox, "--schedule-minutes", "10").exit_code == 0

    waits = []
    for turn in range(1, 5):
        make_due(database_url, "fine@contoso.example", "gone@contoso.example")
        outcome = {m["mailbox"]: m for m in run_sync_all()["mailboxes"]}
        assert outcome["fine@contoso.example"]["status"] == "completed"
        assert outcome["gone@contoso.example"]["status"] == "failed"
        gone = {s["mailbox"]: s for s in stores(database_url)}["gone@contoso.example"]
        assert gone["consecutive_failures"] == turn
        assert "not_found" in gone["last_error"]
        waits.append(round((gone["next_due_at"] - gone["last_finished_at"]).total_seconds() / 60))
    # Its interval, until the third failure in a row; then twice as long per failure.
    assert waits[:2] == [10, 10] and waits[2:] == [20, 40]
    listed = json.loads(cli("mailbox", "list", "--json").stdout.splitlines()[-1])
    assert [(m["mailbox"], m["health"]) for m in listed["mailboxes"]] == [
        ("gone@contoso.example", "backing_off"),
        ("fine@contoso.example", "ok"),
    ]
    # The chunk report lists it first, as a problem mailbox, though it never got a chunk.
    report = build_report(get_runtime().db, since="1h", business=BUSINESS)
    stores_table = report.stores.to_dict("records")
    assert [(r["mailbox"], r["health"], r["consecutive_failures"]) for r in stores_table] == [
        ("gone@contoso.example", "backing_off", 4),
        ("fine@contoso.example", "ok", 0),
    ]
    # Resuming forgives it: due at once, streak forgotten.
    assert cli("mailbox", "resume", "gone@contoso.example").exit_code == 0
    gone = {s["mailbox"]: s for s in stores(database_url)}["gone@contoso.example"]
    assert gone["consecutive_failures"] == 0


def test_two_sync_alls_at_once_never_sync_a_mailbox_twice(
    cli: Callable[..., Result], simulator: Any, database_url: str
) -> None:
    boxes = [f"race{i}@contoso.example" for i in range(6)]
    for i, mailbox in enumerate(boxes):
        simulator.add_mailbox(mailbox, 150, seed=80 + i)
        assert cli("mailbox", "add", mailbox).exit_code == 0
    results: list[dict[str, Any]] = []
    barrier = threading.Barrier(2)

    def one() -> None:
        barrier.wait()
        results.append(run_sync_all(parallel=3))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    picked = [m["mailbox"] for result in results for m in result["mailboxes"]]
    assert sorted(picked) == sorted(boxes)  # each by exactly one of the two
    jobs = rows(
        database_url,
        "SELECT s.mailbox, q.status FROM sync_queue q JOIN stores s ON s.id = q.store_id",
    )
    assert sorted(j["mailbox"] for j in jobs) == sorted(boxes)
    assert {j["status"] for j in jobs} == {"completed"}


def test_a_mailbox_with_an_active_job_is_not_due(
    cli: Callable[..., Result], simulator: Any, database_url: str
) -> None:
    assert cli("mailbox", "add", "busy@contoso.example").exit_code == 0
    store = stores(database_url)[0]
    rows(
        database_url,
        "INSERT INTO sync_queue (business_id, store_id, sync_type, status,"
        " chunk_size, page_size) VALUES (%s, %s, 'full', 'running', 100, 100)"
        " RETURNING id",
        store["business_id"],
        store["id"],
    )

    assert run_sync_all()["mailboxes"] == []
    assert stores(database_url)[0]["next_due_at"] == store["next_due_at"]  # not claimed
