"""The Graph simulator over real HTTP (loopback), driven with httpx as mailsync drives Graph."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailsync.simulator import Faults, GraphSimulator, render
from mailsync.simulator.attachments import content_of, content_sha256
from mailsync.simulator.generator import Message, iso

USER = "adele@contoso.example"
COUNT = 250
SCOPE = "https://graph.microsoft.com/.default"
FOLDER_MESSAGES = f"/v1.0/users/{USER}/mailFolders/inbox/messages"
REPO = Path(__file__).resolve().parents[2]
# httpx.Client() loads the CA bundle each time (~90 ms here); plain-http tests share one.
TLS = ssl.create_default_context()


def new_client(**options: Any) -> httpx.Client:
    return httpx.Client(verify=TLS, timeout=10, **options)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with new_client() as client:
        yield client


def fetch_token(http: httpx.Client, base_url: str, secret: str = "sim-secret") -> httpx.Response:
    return http.post(
        f"{base_url}/contoso.example/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "sim-client",
            "client_secret": secret,
            "scope": SCOPE,
        },
    )


@pytest.fixture
def sim() -> Iterator[GraphSimulator]:
    with GraphSimulator() as simulator:
        simulator.add_mailbox(USER, COUNT, seed=7)
        yield simulator


@pytest.fixture
def client(sim: GraphSimulator, http: httpx.Client) -> Iterator[httpx.Client]:
    token = fetch_token(http, sim.url).json()["access_token"]
    with new_client(base_url=sim.url, headers={"Authorization": f"Bearer {token}"}) as graph:
        yield graph


def walk(client: httpx.Client, url: str, params: dict[str, str] | None = None) -> list[dict]:
    """Follow @odata.nextLink to the end, as a naive Graph client does."""
    messages: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        response = client.get(next_url, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        messages.extend(body["value"])
        next_url, params = body.get("@odata.nextLink"), None
    return messages


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


# --- identity ---------------------------------------------------------------------------------


def test_token_endpoint_issues_bearer_tokens(sim: GraphSimulator, http: httpx.Client) -> None:
    response = fetch_token(http, sim.url)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == body["ext_expires_in"] == 3600
    assert len(body["access_token"]) > 40
    assert sim.stats.token_requests == 1


def test_wrong_secret_is_invalid_client(sim: GraphSimulator, http: httpx.Client) -> None:
    response = fetch_token(http, sim.url, secret="not-the-secret")
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_client"
    assert body["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert "not-the-secret" not in response.text


def test_openid_configuration_names_https_endpoints(
    sim: GraphSimulator, http: httpx.Client
) -> None:
    config = http.get(f"{sim.url}/contoso.example/v2.0/.well-known/openid-configuration").json()
    assert config["token_endpoint"] == (
        "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token"
    )
    assert config["issuer"].startswith("https://")


# --- reading mail ---------------------------------------------------------------------------


def test_folder_reports_counts(sim: GraphSimulator, client: httpx.Client) -> None:
    folder = client.get(f"/v1.0/users/{USER}/mailFolders/inbox").json()
    mailbox = sim.mailbox(USER)
    assert folder["displayName"] == "Inbox"
    assert folder["id"] == mailbox.folder_id
    assert folder["totalItemCount"] == COUNT
    assert folder["unreadItemCount"] == sum(not m.isRead for m in mailbox.messages())
    by_id = client.get(f"/v1.0/users/{mailbox.user_id}/mailFolders/{mailbox.folder_id}").json()
    assert by_id["totalItemCount"] == COUNT


def test_count_and_nextlink_paging_cover_everything_once(
    sim: GraphSimulator, client: httpx.Client
) -> None:
    first = client.get(FOLDER_MESSAGES, params={"$count": "true", "$top": "1"}).json()
    assert first["@odata.count"] == COUNT
    messages = walk(client, FOLDER_MESSAGES, {"$top": "40", "$select": "receivedDateTime"})
    ids = [m["id"] for m in messages]
    assert len(ids) == len(set(ids)) == COUNT
    assert set(ids) == sim.mailbox(USER).ids()
    received = [m["receivedDateTime"] for m in messages]
    assert received == sorted(received, reverse=True)  # Graph's default: newest first


def test_default_page_size_is_ten_and_nextlink_is_absolute(
    sim: GraphSimulator, client: httpx.Client
) -> None:
    body = client.get(FOLDER_MESSAGES).json()
    assert len(body["value"]) == 10
    assert body["@odata.nextLink"].startswith(f"{sim.url}{FOLDER_MESSAGES}?")
    assert "$skip=10" in body["@odata.nextLink"]


def test_ascending_order_and_whole_mailbox_endpoint(
    sim: GraphSimulator, client: httpx.Client
) -> None:
    params = {"$top": "100", "$orderby": "receivedDateTime asc", "$select": "receivedDateTime"}
    messages = walk(client, f"/v1.0/users/{USER}/messages", params)
    expected = [m.id for m in sim.mailbox(USER).messages()]  # sorted by (received, id)
    assert [m["id"] for m in messages] == expected


def test_skip_past_the_end_is_an_empty_last_page(client: httpx.Client) -> None:
    body = client.get(FOLDER_MESSAGES, params={"$skip": str(COUNT + 5)}).json()
    assert body["value"] == []
    assert "@odata.nextLink" not in body


def test_full_messages_carry_the_exact_body(sim: GraphSimulator, client: httpx.Client) -> None:
    expected = {m.id: m for m in sim.mailbox(USER).messages()}
    messages = walk(client, FOLDER_MESSAGES, {"$top": "1000"})
    assert len(messages) == COUNT
    for message in messages:
        source = expected[message["id"]]
        assert message["body"] == {"contentType": "html", "content": source.body_content}
        assert message["from"] == source.from_
        assert message["receivedDateTime"] == source.receivedDateTime
        assert "attachments" not in message


def test_select_returns_id_plus_the_known_selected_fields(client: httpx.Client) -> None:
    body = client.get(FOLDER_MESSAGES, params={"$select": "subject,NoSuchField,isread"}).json()
    for message in body["value"]:
        assert set(message) == {"@odata.etag", "id", "subject", "isRead"}


@pytest.mark.parametrize(
    "expand",
    ["attachments", "attachments($select=id,name,size,contentType,isInline)"],
)
def test_expand_attachments_adds_metadata(
    sim: GraphSimulator, client: httpx.Client, expand: str
) -> None:
    expected = {m.id: m for m in sim.mailbox(USER).messages()}
    params = {"$top": "1000", "$select": "hasAttachments", "$expand": expand}
    messages = walk(client, FOLDER_MESSAGES, params)
    with_attachments = [m for m in messages if m["hasAttachments"]]
    assert with_attachments
    for message in messages:
        got = [
            {k: v for k, v in a.items() if k not in ("@odata.type", "contentBytes")}
            for a in message["attachments"]
        ]
        assert got == expected[message["id"]].attachments
        # Without a nested $select, Graph sends each file's content whole (base64).
        for sent, attachment in zip(
            message["attachments"], expected[message["id"]].attachments, strict=True
        ):
            content = content_of(attachment)
            if "(" in expand or content.kind != "file":
                assert "contentBytes" not in sent
            else:
                raw = base64.b64decode(sent["contentBytes"])
                assert hashlib.sha256(raw).hexdigest() == content_sha256(content)


def test_filter_returns_exactly_the_window(sim: GraphSimulator, client: httpx.Client) -> None:
    mailbox = sim.mailbox(USER).messages()
    since, until = mailbox[40].received_ts, mailbox[140].received_ts
    params = {
        "$filter": f"receivedDateTime ge {iso(since)} and receivedDateTime lt {iso(until)}",
        "$orderby": "receivedDateTime asc",
        "$top": "25",
        "$count": "true",
    }
    expected = [m.id for m in mailbox if since <= m.received_ts < until]
    assert client.get(FOLDER_MESSAGES, params=params).json()["@odata.count"] == len(expected)
    assert [m["id"] for m in walk(client, FOLDER_MESSAGES, params)] == expected


def test_filter_bounds_gt_le_and_fractional_seconds(
    sim: GraphSimulator, client: httpx.Client
) -> None:
    mailbox = sim.mailbox(USER).messages()
    since, until = mailbox[10].received_ts, mailbox[30].received_ts
    params = {
        "$filter": f"receivedDateTime gt {iso(since)[:-1]}.5Z and receivedDateTime le "
        f"{iso(until)[:-1]}.0000000Z",
        "$top": "1000",
    }
    expected = {m.id for m in mailbox if since < m.received_ts <= until}
    assert {m["id"] for m in walk(client, FOLDER_MESSAGES, params)} == expected


@pytest.mark.parametrize(
    "filter_clause",
    [
        "subject eq 'hello'",
        "receivedDateTime ge '2024-01-01T00:00:00Z'",
        "receivedDateTime ge 2024-13-01",
        "receivedDateTime ge 2024-13-01T00:00:00Z",
        "receivedDateTime ge 2024-01-01T00:00:00Z or receivedDateTime lt 2024-02-01T00:00:00Z",
    ],
)
def test_unsupported_filters_are_bad_requests(client: httpx.Client, filter_clause: str) -> None:
    response = client.get(FOLDER_MESSAGES, params={"$filter": filter_clause})
    assert response.status_code == 400
    assert error_code(response) == "BadRequest"


@pytest.mark.parametrize(
    ("filter_clause", "orderby"),
    [
        ("receivedDateTime ge 2024-01-01T00:00:00Z", "subject"),
        ("isRead eq false", "receivedDateTime desc"),
    ],
)
def test_filter_and_orderby_on_different_properties_is_inefficient(
    client: httpx.Client, filter_clause: str, orderby: str
) -> None:
    response = client.get(FOLDER_MESSAGES, params={"$filter": filter_clause, "$orderby": orderby})
    assert response.status_code == 400
    assert error_code(response) == "InefficientFilter"
    assert "too complex" in response.json()["error"]["message"]


@pytest.mark.parametrize("top", ["0", "1001", "ten", "-5"])
def test_top_out_of_range_is_rejected(client: httpx.Client, top: str) -> None:
    response = client.get(FOLDER_MESSAGES, params={"$top": top})
    assert response.status_code == 400


def test_top_of_1000_is_allowed(client: httpx.Client) -> None:
    assert len(client.get(FOLDER_MESSAGES, params={"$top": "1000"}).json()["value"]) == COUNT


def test_unknown_user_and_folder_are_404(client: httpx.Client) -> None:
    response = client.get("/v1.0/users/nobody@contoso.example/mailFolders/inbox/messages")
    assert response.status_code == 404
    assert error_code(response) == "ErrorInvalidUser"
    assert "nobody@contoso.example" in response.json()["error"]["message"]
    response = client.get(f"/v1.0/users/{USER}/mailFolders/archive/messages")
    assert response.status_code == 404
    assert error_code(response) == "ErrorItemNotFound"


def test_single_message_and_deleted_message(sim: GraphSimulator, client: httpx.Client) -> None:
    mailbox = sim.mailbox(USER)
    message = mailbox.messages()[3]
    got = client.get(f"/v1.0/users/{USER}/messages/{message.id}", params={"$select": "subject"})
    assert got.json() == {
        "@odata.etag": f'W/"{message.changeKey}"',
        "id": message.id,
        "subject": message.subject,
    }
    mailbox.delete([message.id])
    assert client.get(f"/v1.0/users/{USER}/messages/{message.id}").status_code == 404


def test_prefer_immutable_id_is_acknowledged(client: httpx.Client) -> None:
    response = client.get(FOLDER_MESSAGES, headers={"Prefer": 'IdType="ImmutableId"'})
    assert response.headers["Preference-Applied"] == 'IdType="ImmutableId"'
    assert response.headers["Content-Type"] == "application/json"


# --- tokens -----------------------------------------------------------------------------------


def test_missing_or_unknown_token_is_401(sim: GraphSimulator, http: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer made-up"}):
        response = http.get(f"{sim.url}{FOLDER_MESSAGES}", headers=headers)
        assert response.status_code == 401
        assert error_code(response) == "InvalidAuthenticationToken"


def test_expired_tokens_are_refused_until_a_new_one_is_fetched(
    sim: GraphSimulator, client: httpx.Client, http: httpx.Client
) -> None:
    assert client.get(FOLDER_MESSAGES).status_code == 200
    sim.expire_all_tokens()
    response = client.get(FOLDER_MESSAGES)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Access token has expired or is not yet valid."
    fresh = fetch_token(http, sim.url).json()["access_token"]
    ok = client.get(FOLDER_MESSAGES, headers={"Authorization": f"Bearer {fresh}"})
    assert ok.status_code == 200


def test_token_lifetime_is_honoured(sim: GraphSimulator, http: httpx.Client) -> None:
    sim.faults.token_lifetime_s = 0
    body = fetch_token(http, sim.url).json()
    assert body["expires_in"] == 0
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert http.get(f"{sim.url}{FOLDER_MESSAGES}", headers=headers).status_code == 401


# --- faults -----------------------------------------------------------------------------------


def test_throttling_answers_429_with_retry_after(sim: GraphSimulator, client: httpx.Client) -> None:
    sim.faults.throttle_next = 2
    sim.faults.retry_after_s = 0.05
    for _ in range(2):
        response = client.get(FOLDER_MESSAGES)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "0.05"
        assert error_code(response) == "TooManyRequests"
        assert "MailboxConcurrency" in response.json()["error"]["message"]
    assert client.get(FOLDER_MESSAGES).status_code == 200
    assert sim.faults.throttle_next == 0
    assert sim.stats.by_status[429] == 2


def test_whole_second_retry_after_is_an_integer(sim: GraphSimulator, client: httpx.Client) -> None:
    sim.faults.throttle_next = 1
    assert client.get(FOLDER_MESSAGES).headers["Retry-After"] == "1"


def test_server_errors_then_recovery(sim: GraphSimulator, client: httpx.Client) -> None:
    sim.faults.server_error_next = 2
    sim.faults.server_error_status = 504
    assert [client.get(FOLDER_MESSAGES).status_code for _ in range(3)] == [504, 504, 200]


def test_malformed_page_fails_once(sim: GraphSimulator, client: httpx.Client) -> None:
    sim.faults.malformed_page_at = 2
    page1 = client.get(FOLDER_MESSAGES)
    json.loads(page1.content)
    broken = client.get(page1.json()["@odata.nextLink"])
    assert broken.status_code == 200
    with pytest.raises(ValueError):
        json.loads(broken.content)
    again = client.get(page1.json()["@odata.nextLink"])
    assert len(again.json()["value"]) == 10


def test_persistent_malformed_page_keeps_failing_on_that_page(
    sim: GraphSimulator, client: httpx.Client
) -> None:
    sim.faults.malformed_persistent = True
    sim.faults.malformed_page_at = 1
    for _ in range(3):
        with pytest.raises(ValueError):
            json.loads(client.get(FOLDER_MESSAGES).content)
    other_page = client.get(FOLDER_MESSAGES, params={"$skip": "10"})
    assert len(other_page.json()["value"]) == 10


def test_throttle_after_pages_fires_on_the_next_request(
    sim: GraphSimulator, client: httpx.Client
) -> None:
    sim.faults.update({"throttle_after_pages": 2, "throttle_burst": 2, "retry_after_s": 0})
    statuses = [client.get(FOLDER_MESSAGES).status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 200]
    assert sim.faults.throttle_after_pages is None  # fired once, disarmed
    assert sim.faults.throttle_next == 0


def test_only_message_pages_count_towards_a_trigger(
    sim: GraphSimulator, client: httpx.Client
) -> None:
    sim.faults.server_error_after_pages = 1
    assert client.get(f"/v1.0/users/{USER}/mailFolders/inbox").status_code == 200  # not a page
    assert client.get(f"/v1.0/users/{USER}").status_code == 200
    assert client.get(FOLDER_MESSAGES).status_code == 200  # the first page: fires after it
    assert [client.get(FOLDER_MESSAGES).status_code for _ in range(2)] == [503, 200]


def test_reassigning_a_trigger_restarts_its_count(
    sim: GraphSimulator, client: httpx.Client
) -> None:
    sim.faults.throttle_after_pages = 2
    client.get(FOLDER_MESSAGES)
    sim.faults.throttle_after_pages = 2  # counts from zero again
    assert [client.get(FOLDER_MESSAGES).status_code for _ in range(3)] == [200, 200, 429]


def test_expire_tokens_after_pages(sim: GraphSimulator, client: httpx.Client) -> None:
    sim.faults.expire_tokens_after_pages = 3
    assert [client.get(FOLDER_MESSAGES).status_code for _ in range(4)] == [200, 200, 200, 401]
    assert sim.stats.message_pages == 3


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_page_triggers_take_counts_from_one(value: Any) -> None:
    with pytest.raises(ValueError):
        Faults().update({"throttle_after_pages": value})


def test_latency_is_added_to_message_pages(sim: GraphSimulator, client: httpx.Client) -> None:
    sim.faults.latency_ms = 150
    started = time.perf_counter()
    client.get(FOLDER_MESSAGES)
    assert time.perf_counter() - started >= 0.15


def test_mailbox_concurrency_limit(sim: GraphSimulator, http: httpx.Client) -> None:
    sim.faults.max_concurrent_per_mailbox = 2
    sim.faults.latency_ms = 400  # holds each admitted request's slot
    token = fetch_token(http, sim.url).json()["access_token"]
    start = threading.Barrier(6)
    statuses: list[tuple[int, str | None]] = []

    def one_request() -> None:
        with new_client(headers={"Authorization": f"Bearer {token}"}) as own:
            start.wait()
            response = own.get(f"{sim.url}{FOLDER_MESSAGES}")
            code = response.json().get("error", {}).get("code")
            statuses.append((response.status_code, code))

    threads = [threading.Thread(target=one_request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(statuses) == 6
    assert statuses.count((200, None)) >= 2
    assert (429, "ApplicationThrottled") in statuses


def test_mutations_add_and_delete_messages(sim: GraphSimulator, client: httpx.Client) -> None:
    mailbox = sim.mailbox(USER)
    newest_before = mailbox.messages()[-1].received_ts
    sim.faults.update({"mutate_every_pages": 2, "add_per_mutation": 3, "delete_per_mutation": 4})
    for _ in range(4):  # two mutations
        client.get(FOLDER_MESSAGES)
    assert len(mailbox.added_ids) == 6
    assert len(mailbox.deleted_ids) == 8
    assert mailbox.ids() == (mailbox.initial_ids - mailbox.deleted_ids) | mailbox.added_ids
    added = [m for m in mailbox.messages() if m.id in mailbox.added_ids]
    assert all(m.received_ts > newest_before for m in added)
    folder = client.get(f"/v1.0/users/{USER}/mailFolders/inbox").json()
    assert folder["totalItemCount"] == COUNT - 8 + 6


def test_mutations_are_deterministic() -> None:
    deleted = []
    for _ in range(2):
        with GraphSimulator() as simulator:
            mailbox = simulator.add_mailbox(USER, 100, seed=3)
            mailbox.mutate(add=2, delete=5)
            deleted.append(sorted(mailbox.deleted_ids))
    assert deleted[0] == deleted[1]


def test_deletions_make_a_naive_nextlink_walker_miss_messages(
    sim: GraphSimulator, client: httpx.Client
) -> None:
    """The drift graph.py's keyset paging exists to avoid: $skip is evaluated per request."""
    mailbox = sim.mailbox(USER)
    sim.faults.mutate_every_pages = 1
    sim.faults.delete_per_mutation = 5
    seen = {m["id"] for m in walk(client, FOLDER_MESSAGES, {"$top": "20", "$select": "id"})}
    present_throughout = mailbox.initial_ids - mailbox.deleted_ids
    missed = present_throughout - seen
    assert mailbox.deleted_ids  # deletions did happen
    assert missed, "a $skip walk should skip messages when earlier ones are deleted"
    assert seen <= mailbox.initial_ids  # and it never invents any


# --- admin API and lifecycle -------------------------------------------------------------------


def test_admin_api_steers_faults_and_mailboxes(
    sim: GraphSimulator, client: httpx.Client, http: httpx.Client
) -> None:
    response = http.post(f"{sim.url}/_sim/faults", json={"throttle_next": 1, "retry_after_s": 0})
    assert response.json()["throttle_next"] == 1
    assert client.get(FOLDER_MESSAGES).status_code == 429
    armed = http.post(f"{sim.url}/_sim/faults", json={"expire_tokens_after_pages": 1})
    assert armed.json()["expire_tokens_after_pages"] == 1
    assert client.get(FOLDER_MESSAGES).status_code == 200
    assert http.get(f"{sim.url}/_sim/faults").json()["expire_tokens_after_pages"] is None
    assert client.get(FOLDER_MESSAGES).status_code == 401
    client.headers["Authorization"] = f"Bearer {fetch_token(http, sim.url).json()['access_token']}"
    bad = http.post(f"{sim.url}/_sim/faults", json={"no_such_fault": 1})
    assert bad.status_code == 400
    created = http.post(
        f"{sim.url}/_sim/mailboxes", json={"user": "lee@contoso.example", "count": 30, "seed": 2}
    )
    assert created.status_code == 201
    assert created.json()["count"] == 30
    assert client.get("/v1.0/users/lee@contoso.example/messages").status_code == 200
    detail = http.get(f"{sim.url}/_sim/mailboxes/lee@contoso.example").json()
    assert len(detail["ids"]) == 30
    stats = http.get(f"{sim.url}/_sim/stats").json()
    assert stats["by_status"]["429"] == 1
    assert stats["token_requests"] == 2
    assert http.post(f"{sim.url}/_sim/tokens/expire").status_code == 200
    assert client.get(FOLDER_MESSAGES).status_code == 401


def test_faults_reset_and_coercion() -> None:
    faults = Faults()
    faults.update({"latency_ms": 5, "malformed_page_at": 3, "malformed_persistent": True})
    assert faults.latency_ms == 5.0
    with pytest.raises(ValueError):
        faults.update({"throttle_next": "many"})
    faults.reset()
    assert faults.as_dict() == Faults().as_dict()


def test_stop_does_not_wait_for_idle_keepalive_connections() -> None:
    simulator = GraphSimulator().start()
    simulator.add_mailbox(USER, 5)
    with new_client() as idle:  # keeps its connection open after the request
        fetch_token(idle, simulator.url)
        idle.get(f"{simulator.url}/_sim/stats")
        started = time.perf_counter()
        simulator.stop()
        assert time.perf_counter() - started < 2


def test_serve_forever_runs_as_a_separate_process(http: httpx.Client) -> None:
    code = (
        "from mailsync.simulator import serve_forever; "
        "serve_forever('127.0.0.1', 0, {'lee@contoso.example': 40}, 1)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        token = fetch_token(http, url).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        body = http.get(
            f"{url}/v1.0/users/lee@contoso.example/messages?$count=true", headers=headers
        )
        assert body.json()["@odata.count"] == 40
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_each_message_is_rendered_once_per_shape(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered: list[str] = []
    original = render.render_message

    def counting_render(message: Message, shape: Any) -> Any:
        rendered.append(message.id)
        return original(message, shape)

    monkeypatch.setattr(render, "render_message", counting_render)
    walk(client, FOLDER_MESSAGES, {"$top": "100"})
    assert len(rendered) == len(set(rendered)) == COUNT
    walk(client, FOLDER_MESSAGES, {"$top": "60"})  # same shape, other pages: all cached
    assert len(rendered) == COUNT
    walk(client, FOLDER_MESSAGES, {"$top": "100", "$select": "subject"})  # a new shape
    assert len(rendered) == 2 * COUNT


def test_throughput_with_full_bodies(
    capsys: pytest.CaptureFixture[str], http: httpx.Client
) -> None:
    """Walks 6,000 messages with $top=1000: cold (first render) and warm (cached)."""
    with GraphSimulator() as simulator:
        simulator.add_mailbox("bulk@contoso.example", 6_000, seed=1)
        token = fetch_token(http, simulator.url).json()["access_token"]
        url = f"{simulator.url}/v1.0/users/bulk@contoso.example/messages"
        params = {"$top": "1000", "$expand": "attachments($select=id,name,size)"}
        rates = {}
        with new_client(headers={"Authorization": f"Bearer {token}"}) as graph:
            for label in ("cold", "warm"):
                started = time.perf_counter()
                count = len(walk(graph, url, params))
                rates[label] = count / (time.perf_counter() - started)
                assert count == 6_000
    with capsys.disabled():
        print(
            f"\nsimulator throughput (one httpx client, JSON parsed): "
            f"cold {rates['cold']:,.0f} msg/s, warm {rates['warm']:,.0f} msg/s"
        )
    # ~15-17k warm on an idle 2-vCPU box, where the client's json.loads is the bottleneck, and
    # a fifth of that when the box is busy: only a sanity floor here. What the speed rests on
    # is asserted deterministically by test_each_message_is_rendered_once_per_shape.
    assert rates["warm"] > 500


# --- the hold fault: a request known to be on the wire ------------------------------------


def test_hold_after_pages_holds_the_next_page_until_released(
    sim: GraphSimulator, client: httpx.Client, http: httpx.Client
) -> None:
    first = client.get(FOLDER_MESSAGES, params={"$top": "10"})
    assert first.status_code == 200
    sim.faults.hold_after_pages = 1  # the page after this one waits
    assert client.get(FOLDER_MESSAGES, params={"$top": "10"}).status_code == 200
    assert not sim.faults.wait_held(0)
    answered: list[int] = []
    request = threading.Thread(
        target=lambda: answered.append(
            client.get(FOLDER_MESSAGES, params={"$top": "10"}).status_code
        )
    )
    request.start()
    # From another process: the admin API sees the same event.
    assert http.post(f"{sim.url}/_sim/hold/wait", json={"timeout_s": 10}).json() == {"held": True}
    assert answered == []
    assert http.post(f"{sim.url}/_sim/hold/release").status_code == 200
    request.join(10)
    assert answered == [200]
    assert sim.faults.hold_after_pages is None  # released: nothing more is held
    assert client.get(FOLDER_MESSAGES, params={"$top": "10"}).status_code == 200


def test_hold_wait_times_out_when_nothing_is_held(sim: GraphSimulator, http: httpx.Client) -> None:
    response = http.post(f"{sim.url}/_sim/hold/wait", json={"timeout_s": 0.05})
    assert response.status_code == 408
    assert http.post(f"{sim.url}/_sim/faults", json={"hold_after_pages": -1}).status_code == 400
