"""Tenant discovery against the simulator's directory, over real HTTP: user and shared
mailboxes found, users without a mailbox skipped, the listing paged, a missing
permission said plainly."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from mailsync.errors import PermissionDeniedError
from mailsync.graph.discovery import discover

USERS = ("ada@contoso.example", "bob@contoso.example", "cy@contoso.example")
SHARED = "support@contoso.example"
NO_MAILBOX = "onprem@contoso.example"  # mail set, no Exchange Online mailbox
NO_MAIL = "printer@contoso.example"  # no mail address: the filter leaves it out


@pytest.fixture()
def tenant(simulator: Any) -> Any:
    for i, upn in enumerate((*USERS, SHARED)):
        simulator.add_mailbox(upn, 5, seed=90 + i)
    simulator.directory.mark_shared(SHARED)
    simulator.directory.add_user(NO_MAILBOX)
    simulator.directory.add_user(NO_MAIL, mail=None)
    return simulator


def test_discovery_finds_user_and_shared_mailboxes_and_skips_users_without_one(
    runtime: Any, tenant: Any
) -> None:
    found = {d.user.upn: d for d in discover(runtime.graph(), page_size=2)}

    assert sorted(found) == sorted((*USERS, SHARED, NO_MAILBOX))  # not NO_MAIL
    assert {upn for upn, d in found.items() if d.has_mailbox} == {*USERS, SHARED}
    assert found[SHARED].user.account_enabled is False  # found all the same
    assert found[NO_MAILBOX].reason == "no mailbox (MailboxNotEnabledForRESTAPI)"
    # Five users in pages of two: three listing requests, then one probe per user.
    assert tenant.stats.by_kind["user"] == 3
    assert tenant.stats.by_kind["folder"] == 5


def test_mailbox_discover_add_registers_the_mailboxes_once(
    runtime: Any, tenant: Any, database_url: str
) -> None:
    from mailsync.cli import app

    runner = CliRunner()
    first = runner.invoke(app, ["mailbox", "discover", "--add", "--json"])
    assert first.exit_code == 0, first.output
    result = json.loads(first.stdout.splitlines()[-1])
    assert (result["users"], result["mailboxes"]) == (5, 4)
    assert sorted(result["added"]) == sorted((*USERS, SHARED))

    listed = runner.invoke(app, ["mailbox", "list", "--json"])
    registered = json.loads(listed.stdout.splitlines()[-1])["mailboxes"]
    assert sorted(m["mailbox"] for m in registered) == sorted((*USERS, SHARED))
    again = json.loads(
        runner.invoke(app, ["mailbox", "discover", "--add", "--json"]).stdout.splitlines()[-1]
    )
    assert again["added"] == [] and all(f["registered"] == f["has_mailbox"] for f in again["found"])


def test_discover_without_user_read_all_says_so_and_registers_nothing(
    runtime: Any, tenant: Any, database_url: str
) -> None:
    from mailsync.cli import app

    tenant.directory.forbidden = True
    result = CliRunner().invoke(app, ["mailbox", "discover", "--add"])

    assert isinstance(result.exception, PermissionDeniedError)
    assert "User.Read.All" in str(result.exception)
    listed = CliRunner().invoke(app, ["mailbox", "list", "--json"])
    assert json.loads(listed.stdout.splitlines()[-1])["mailboxes"] == []


@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        ({}, "$filter=mail ne null&$count=true", 400),  # an advanced query without its header
        ({"ConsistencyLevel": "eventual"}, "$filter=mail ne null", 400),  # nor its $count
        ({"ConsistencyLevel": "eventual"}, "$filter=mail ne null&$count=true", 200),
    ],
)
def test_the_listing_is_an_advanced_query(
    tenant: Any, headers: dict[str, str], query: str, status: int
) -> None:
    token = tenant.issue_token()
    response = httpx.get(
        f"{tenant.url}/v1.0/users?{query}", headers={"Authorization": f"Bearer {token}", **headers}
    )
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"]["code"] == "Request_UnsupportedQuery"
    else:
        assert response.json()["@odata.count"] == 5
