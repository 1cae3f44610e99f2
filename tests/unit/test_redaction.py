"""Secrets kept out of output: database URLs without passwords, reprs without secrets, and a
Graph token sent to the configured host only."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from mailsync import validate
from mailsync.config import Settings
from mailsync.errors import BadDataError, InvalidInputError
from mailsync.graph.auth import AccessToken, GraphAuth, TokenProvider
from mailsync.store.db import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://app:hunter2@db.example:5432/mail",
            "postgresql://app:***@db.example:5432/mail",
        ),
        ("postgresql://:hunter2@db.example/mail", "postgresql://:***@db.example/mail"),
        ("postgresql://app:hun@ter2@db.example/mail", "postgresql://app:***@db.example/mail"),
        (
            "postgres://app:hunter2@h1,h2/mail?sslmode=require",
            "postgres://app:***@h1,h2/mail?sslmode=require",
        ),
        (
            "postgresql://db.example/mail?user=app&password=hunter2&sslmode=require",
            "postgresql://db.example/mail?user=app&password=***&sslmode=require",
        ),
        (
            "host=db.example user=app password=hunter2 dbname=mail",
            "host=db.example user=app password=*** dbname=mail",
        ),
        (
            "host=db.example password = 'hunter 2' dbname=mail",
            "host=db.example password = *** dbname=mail",
        ),
        (
            "postgresql://postgres:@/postgres?host=/tmp/pg",
            "postgresql://postgres:@/postgres?host=/tmp/pg",
        ),
        ("postgresql://app@db.example/mail", "postgresql://app@db.example/mail"),
    ],
)
def test_database_urls_lose_their_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "hunter" not in redact_url(url)


def test_reprs_do_not_show_secrets() -> None:
    settings = Settings(home=Path("/tmp"), database_url=None, client_secret="s3cr3t-value")
    assert "s3cr3t-value" not in repr(settings)
    assert "tok3n-value" not in repr(AccessToken("tok3n-value", 3600, False))
    provider = TokenProvider("tenant", "client", "s3cr3t-value")
    try:
        assert "s3cr3t-value" not in repr(provider)
    finally:
        provider.close()


class StaticProvider:
    """Stands in for TokenProvider: one fixed token."""

    def acquire(self, force_refresh: bool = False, *, rejected: str | None = None) -> AccessToken:
        return AccessToken("tok3n-value", 3600, True)


def test_the_token_goes_to_the_graph_host_only() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"value": []})

    auth = GraphAuth(StaticProvider(), origin="https://graph.microsoft.com")  # type: ignore[arg-type]
    with httpx.Client(auth=auth, transport=httpx.MockTransport(handler)) as client:
        client.get("https://graph.microsoft.com/v1.0/users/a@b.example/messages")
        client.get("https://graph.microsoft.com:443/v1.0/users/a@b.example/messages")
        for elsewhere in (
            "https://evil.example/v1.0/x",
            "http://graph.microsoft.com/v1.0/x",
            "https://graph.microsoft.com:8443/v1.0/x",
            "https://graph.microsoft.com.evil.example/v1.0/x",
        ):
            with pytest.raises(BadDataError, match="refusing to send the Graph token"):
                client.get(elsewhere)
    assert [r.headers["Authorization"] for r in seen] == ["Bearer tok3n-value"] * 2


@pytest.mark.parametrize("bad", ["x", "1; DROP TABLE sync_queue", "../" + "0" * 32, ""])
def test_job_ids_must_be_uuids(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid job id"):
        validate.job_id(bad)


@pytest.mark.parametrize(
    "address",
    [
        "x?top=1@contoso.com",
        "a&b=c@contoso.com",
        "a$b@contoso.com",
        "a*@contoso.com",
        "a+b@contoso.com",
    ],
)
def test_addresses_exchange_accepts_pass_beyond_entras_upn_characters(address: str) -> None:
    # RFC 5322 atext: Exchange accepts them; graph.py encodes each into one URL segment
    # (tests/unit/test_validate.py).
    assert validate.mailbox(address) == address


@pytest.mark.parametrize(
    "good", ["o.k_-!#^~@contoso.com", "x_fabrikam.com#EXT#@contoso.onmicrosoft.com"]
)
def test_mailboxes_entra_allows_pass(good: str) -> None:
    assert validate.mailbox(good) == good
