"""Real msal against the simulator's token endpoint, through RoutedHttpClient."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import httpx
import pytest

from mailsync.errors import AuthError, ConfigError, TransientError
from mailsync.graph.auth import (
    DEFAULT_AUTHORITY_HOST,
    GraphAuth,
    RoutedHttpClient,
    TokenProvider,
)
from mailsync.simulator import GraphSimulator

USER = "adele@contoso.example"
TENANT = "contoso.example"
SECRET = "sim-secret"
FOLDER = f"/v1.0/users/{USER}/mailFolders/inbox"
# httpx.Client() loads the CA bundle each time (~90 ms here); plain-http tests share one.
TLS = ssl.create_default_context()


@pytest.fixture
def sim() -> Iterator[GraphSimulator]:
    with GraphSimulator(client_id="sim-client", client_secret=SECRET) as simulator:
        simulator.add_mailbox(USER, 20, seed=1)
        yield simulator


@pytest.fixture(scope="module")
def token_http() -> Iterator[httpx.Client]:
    with httpx.Client(verify=TLS, timeout=10) as http:
        yield http


def provider_for(
    sim: GraphSimulator, http: httpx.Client, *, secret: str = SECRET, client_id: str = "sim-client"
) -> TokenProvider:
    routed = RoutedHttpClient(http, DEFAULT_AUTHORITY_HOST, sim.url)
    return TokenProvider(TENANT, client_id, secret, http_client=routed)


def test_msal_obtains_a_token_graph_accepts(sim: GraphSimulator, token_http: httpx.Client) -> None:
    provider = provider_for(sim, token_http)
    token = provider.token()
    assert token
    assert sim.stats.token_requests == 1
    response = token_http.get(f"{sim.url}{FOLDER}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_tokens_are_cached_by_msal(sim: GraphSimulator, token_http: httpx.Client) -> None:
    provider = provider_for(sim, token_http)
    first = provider.token()
    assert provider.token() == first
    assert provider.acquire().from_cache
    assert sim.stats.token_requests == 1
    assert provider.fetches == 1


def test_tokens_with_under_five_minutes_left_are_not_reused(
    sim: GraphSimulator, token_http: httpx.Client
) -> None:
    """msal treats a token with < 300 s of life as expired: short lifetimes defeat the cache."""
    sim.faults.token_lifetime_s = 299
    provider = provider_for(sim, token_http)
    assert provider.token() != provider.token()
    assert sim.stats.token_requests == 2


def test_force_refresh_fetches_a_new_token(sim: GraphSimulator, token_http: httpx.Client) -> None:
    provider = provider_for(sim, token_http)
    first = provider.token()
    second = provider.token(force_refresh=True)
    assert second != first
    assert sim.stats.token_requests == 2
    assert provider.token() == second  # and the new one is what the cache holds now


def test_force_refresh_of_an_already_replaced_token_reuses_the_replacement(
    sim: GraphSimulator, token_http: httpx.Client
) -> None:
    provider = provider_for(sim, token_http)
    refused = provider.token()
    replacement = provider.token(force_refresh=True, rejected=refused)
    # A second thread that saw the same refused token must not fetch yet another one.
    assert provider.token(force_refresh=True, rejected=refused) == replacement
    assert sim.stats.token_requests == 2


def test_graph_auth_refreshes_once_after_tokens_expire(
    sim: GraphSimulator, token_http: httpx.Client
) -> None:
    auth = GraphAuth(provider_for(sim, token_http))
    with httpx.Client(base_url=sim.url, auth=auth, verify=TLS) as graph:
        assert graph.get(FOLDER).status_code == 200
        assert auth.token_fetches == 1
        sim.expire_all_tokens()
        response = graph.get(FOLDER)
        assert response.status_code == 200
        assert graph.get(FOLDER).status_code == 200  # the new token is cached and good
    assert auth.refreshes == 1
    assert auth.token_fetches == 2
    assert sim.stats.token_requests == 2
    assert sim.stats.by_status[401] == 1
    assert [r.status_code for r in response.history] == [401]


def test_graph_auth_retries_only_once(sim: GraphSimulator, token_http: httpx.Client) -> None:
    sim.faults.token_lifetime_s = 0  # every token is dead on arrival
    auth = GraphAuth(provider_for(sim, token_http))
    with httpx.Client(base_url=sim.url, auth=auth, verify=TLS) as graph:
        response = graph.get(FOLDER)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert auth.refreshes == 1
    assert sim.stats.data_requests == 2


def test_graph_auth_does_not_refresh_for_other_errors(
    sim: GraphSimulator, token_http: httpx.Client
) -> None:
    auth = GraphAuth(provider_for(sim, token_http))
    with httpx.Client(base_url=sim.url, auth=auth, verify=TLS) as graph:
        assert graph.get("/v1.0/users/nobody@contoso.example/messages").status_code == 404
    assert auth.refreshes == 0


def test_wrong_secret_raises_auth_error_without_the_secret(
    sim: GraphSimulator, token_http: httpx.Client
) -> None:
    secret = "Wr0ng~Secret.Value_123"
    provider = provider_for(sim, token_http, secret=secret)
    with pytest.raises(AuthError) as caught:
        provider.token()
    message = str(caught.value)
    assert "invalid_client" in message
    assert "AADSTS7000215" in message
    assert caught.value.code == "invalid_client"
    assert secret not in message
    assert secret not in repr(caught.value)
    assert secret not in repr(provider)


def test_unknown_client_id_raises_auth_error(sim: GraphSimulator, token_http: httpx.Client) -> None:
    with pytest.raises(AuthError, match="unauthorized_client"):
        provider_for(sim, token_http, client_id="someone-else").token()


def test_token_endpoint_outage_is_an_auth_error(
    sim: GraphSimulator, token_http: httpx.Client
) -> None:
    sim.faults.token_error_next = 1
    with pytest.raises(AuthError, match="503") as caught:
        provider_for(sim, token_http).token()
    assert caught.value.retryable


def test_unreachable_authority_is_transient(token_http: httpx.Client) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    routed = RoutedHttpClient(token_http, DEFAULT_AUTHORITY_HOST, f"http://127.0.0.1:{port}")
    provider = TokenProvider(TENANT, "sim-client", SECRET, http_client=routed)
    with pytest.raises(TransientError):
        provider.token()


@pytest.mark.parametrize(
    ("tenant", "client_id", "secret", "missing"),
    [
        ("", "c", "s3cr3t", "tenant id"),
        ("t", " ", "s3cr3t", "client id"),
        ("t", "c", "", "client secret"),
    ],
)
def test_incomplete_credentials_are_config_errors(
    tenant: str, client_id: str, secret: str, missing: str
) -> None:
    with pytest.raises(ConfigError, match=missing) as caught:
        TokenProvider(tenant, client_id, secret)
    assert "s3cr3t" not in str(caught.value)


def test_routed_http_client_rewrites_only_the_authority_host(token_http: httpx.Client) -> None:
    routed = RoutedHttpClient(token_http, "https://login.microsoftonline.com", "http://127.0.0.1:9")
    url, headers = routed.route("https://login.microsoftonline.com/t/oauth2/v2.0/token?x=1")
    assert url == "http://127.0.0.1:9/t/oauth2/v2.0/token?x=1"
    assert headers == {
        "X-Forwarded-Host": "login.microsoftonline.com",
        "X-Forwarded-Proto": "https",
    }
    assert routed.route("https://graph.microsoft.com/v1.0/me") == (
        "https://graph.microsoft.com/v1.0/me",
        {},
    )
    direct = RoutedHttpClient(token_http, "https://login.microsoftonline.com", None)
    assert direct.route("https://login.microsoftonline.com/t") == (
        "https://login.microsoftonline.com/t",
        {},
    )
