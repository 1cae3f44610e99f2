"""The simulator's message delta over real HTTP, as a sync client walks it: rounds and links,
page sizes, what a later round reports, changes made mid-round, expiry (410), quota (403)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from mailsync.simulator import SYNC_STATE_CODES, GraphSimulator

USER = "megan@contoso.example"
OTHER = "lee@contoso.example"
IMMUTABLE = 'IdType="ImmutableId"'
FIELDS = "subject,isRead,importance,categories,parentFolderId,receivedDateTime"


@pytest.fixture
def sim() -> Iterator[GraphSimulator]:
    with GraphSimulator() as simulator:
        simulator.add_mailbox(USER, messages=200, seed=5, folders="default")
        simulator.add_mailbox(OTHER, messages=60, seed=6, folders="default")
        yield simulator


@pytest.fixture
def client(sim: GraphSimulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {sim.issue_token()}"}
    with httpx.Client(base_url=sim.url, headers=headers, timeout=10) as graph:
        yield graph


def delta_url(folder: str, user: str = USER) -> str:
    return f"/v1.0/users/{user}/mailFolders/{folder}/messages/delta"


@dataclass
class Round:
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # latest version per id
    removed: list[str] = field(default_factory=list)
    page_sizes: list[int] = field(default_factory=list)
    next_links: list[str] = field(default_factory=list)
    delta_link: str = ""


def run_round(
    client: httpx.Client,
    start: str,
    *,
    page_size: int | None = None,
    params: dict[str, str] | None = None,
) -> Round:
    """One round from an initial URL (with options) or a deltaLink, following nextLinks
    exactly as given, with the Prefer header a sync sends on every request."""
    prefer = IMMUTABLE if page_size is None else f"odata.maxpagesize={page_size}, {IMMUTABLE}"
    found = Round()
    url: str | None = start
    while url is not None:
        response = client.get(url, params=params, headers={"Prefer": prefer})
        assert response.status_code == 200, response.text
        body = response.json()
        found.page_sizes.append(len(body["value"]))
        for item in body["value"]:
            if "@removed" in item:
                assert item == {"id": item["id"], "@removed": {"reason": "deleted"}}
                found.removed.append(item["id"])
            else:
                found.items[item["id"]] = item
        url, params = body.get("@odata.nextLink"), None
        if url is not None:
            assert "@odata.deltaLink" not in body and "$skiptoken=" in url
            found.next_links.append(url)
        else:
            found.delta_link = body["@odata.deltaLink"]
            assert "$deltatoken=" in found.delta_link
    return found


def listing(client: httpx.Client, folder: str, user: str = USER) -> dict[str, dict[str, Any]]:
    """The folder's messages as the ordinary listing shows them."""
    found: dict[str, dict[str, Any]] = {}
    url: str | None = f"/v1.0/users/{user}/mailFolders/{folder}/messages"
    params: dict[str, str] | None = {"$top": "1000", "$select": FIELDS}
    while url is not None:
        body = client.get(url, params=params).json()
        found.update({m["id"]: m for m in body["value"]})
        url, params = body.get("@odata.nextLink"), None
    return found


def apply_round(replica: dict[str, dict[str, Any]], round_: Round) -> None:
    for message_id in round_.removed:
        replica.pop(message_id, None)
    replica.update(round_.items)


def mutate(client: httpx.Client, *mutations: dict[str, Any], user: str = USER) -> None:
    response = client.post(f"/_sim/mailboxes/{user}/mutations", json=list(mutations))
    assert response.status_code == 200, response.text


def set_faults(client: httpx.Client, **changes: Any) -> None:
    assert client.post("/_sim/faults", json=changes).status_code == 200


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


# --- rounds and links -------------------------------------------------------------------------


def test_the_first_round_is_the_folder_contents(sim: GraphSimulator, client: httpx.Client) -> None:
    first = run_round(client, delta_url("inbox"), page_size=7, params={"$select": FIELDS})
    expected = listing(client, "inbox")
    assert set(first.items) == set(expected) and len(expected) > 50
    assert first.removed == []
    assert all(size == 7 for size in first.page_sizes[:-1]) and first.page_sizes[-1] <= 7
    for link in [*first.next_links, first.delta_link]:
        assert link.startswith(f"{sim.url}{delta_url('inbox')}?$")  # absolute, replayable
    for message_id, item in first.items.items():
        assert item == expected[message_id]


def test_page_size_comes_from_prefer_with_immutable_ids_in_the_same_header(
    client: httpx.Client,
) -> None:
    prefer = {"Prefer": f"odata.maxpagesize=25, {IMMUTABLE}"}
    response = client.get(delta_url("inbox"), headers=prefer)
    assert len(response.json()["value"]) == 25
    assert response.headers["Preference-Applied"] == f"odata.maxpagesize=25, {IMMUTABLE}"
    # The size is carried in the link: the next request need not repeat the header.
    assert len(client.get(response.json()["@odata.nextLink"]).json()["value"]) == 25
    assert len(client.get(delta_url("inbox")).json()["value"]) == 10  # no header: 10
    huge = client.get(delta_url("inbox"), headers={"Prefer": "odata.maxpagesize=5000"})
    assert huge.headers["Preference-Applied"] == "odata.maxpagesize=1000"


def test_select_is_carried_in_next_and_delta_links(client: httpx.Client) -> None:
    first = run_round(client, delta_url("inbox"), page_size=30, params={"$select": "subject"})
    assert {frozenset(i) for i in first.items.values()} == {
        frozenset({"@odata.etag", "id", "subject"})
    }
    mutate(client, {"op": "read", "count": 2, "folder": "inbox"})
    second = run_round(client, first.delta_link)
    assert len(second.items) == 2
    assert all(set(i) == {"@odata.etag", "id", "subject"} for i in second.items.values())


def test_a_round_without_changes_is_empty_and_moves_on(client: httpx.Client) -> None:
    first = run_round(client, delta_url("archive"), page_size=50)
    second = run_round(client, first.delta_link)
    assert (second.items, second.removed, second.page_sizes) == ({}, [], [0])
    assert run_round(client, second.delta_link).page_sizes == [0]  # and so on


# --- what a later round reports ----------------------------------------------------------------


def test_the_second_round_returns_exactly_the_changes(client: httpx.Client) -> None:
    params = {"$select": FIELDS}
    mutate(client, {"op": "add", "count": 2, "folder": "drafts"})  # drafts to edit, surely
    inbox1 = run_round(client, delta_url("inbox"), page_size=40, params=params)
    archive1 = run_round(client, delta_url("archive"), page_size=40, params=params)
    drafts1 = run_round(client, delta_url("drafts"), page_size=40, params=params)
    ids = list(inbox1.items)
    deleted, moved = ids[0:2], ids[2:4]
    unread = [i for i in ids[4:] if not inbox1.items[i]["isRead"]][:2]
    rest = [i for i in ids[4:] if i not in unread]
    important = [i for i in rest if inbox1.items[i]["importance"] != "high"][:1]
    tagged = [i for i in rest if i not in important][:1]
    draft = next(iter(drafts1.items))
    mutate(
        client,
        {"op": "delete", "ids": deleted},
        {"op": "move", "ids": moved, "to": "archive"},
        {"op": "read", "ids": unread},
        {"op": "importance", "ids": important, "importance": "high"},
        {"op": "categories", "ids": tagged, "categories": ["Blue category"]},
        {"op": "add", "count": 3, "folder": "inbox"},
        {"op": "edit_draft", "ids": [draft], "subject": "Second thoughts"},
    )
    inbox2 = run_round(client, inbox1.delta_link)
    added = set(inbox2.items) - set(ids)
    assert len(added) == 3
    assert set(inbox2.items) == added | set(unread) | set(important) | set(tagged)
    assert sorted(inbox2.removed) == sorted(deleted + moved)  # Graph: a move out is @removed
    assert all(inbox2.items[i]["isRead"] for i in unread)
    assert inbox2.items[important[0]]["importance"] == "high"
    assert inbox2.items[tagged[0]]["categories"] == ["Blue category"]
    archive2 = run_round(client, archive1.delta_link)
    archive_id = client.get(f"/v1.0/users/{USER}/mailFolders/archive").json()["id"]
    assert set(archive2.items) == set(moved) and archive2.removed == []  # the same ids
    assert {i["parentFolderId"] for i in archive2.items.values()} == {archive_id}
    drafts2 = run_round(client, drafts1.delta_link)
    assert list(drafts2.items) == [draft] and drafts2.items[draft]["subject"] == "Second thoughts"


def test_a_message_added_and_deleted_between_rounds_is_not_mentioned(
    client: httpx.Client,
) -> None:
    first = run_round(client, delta_url("inbox"), page_size=100)
    response = client.post(
        f"/_sim/mailboxes/{USER}/mutations", json={"op": "add", "count": 1, "folder": "inbox"}
    )
    [added] = response.json()["results"][0]["ids"]
    mutate(client, {"op": "delete", "ids": [added]})
    second = run_round(client, first.delta_link)
    assert (second.items, second.removed) == ({}, [])


@pytest.mark.parametrize("after_page", [1, 4, -1])
def test_changes_made_mid_round_are_not_lost(client: httpx.Client, after_page: int) -> None:
    """Mail changes while the first round pages; the replica built from that round and the
    next one equals the folder, whichever page the changes followed (-1: the last page)."""
    pages = -(-len(listing(client, "inbox")) // 10)
    assert pages >= 5
    changes = [
        {"op": "add", "count": 4, "folder": "inbox"},
        {"op": "delete", "count": 3, "folder": "inbox"},
        {"op": "move", "count": 3, "folder": "inbox", "to": "archive"},
        {"op": "read", "count": 3, "folder": "inbox"},
        {"op": "unread", "count": 2, "folder": "inbox"},
        {"op": "move", "count": 2, "folder": "archive", "to": "inbox"},
    ]
    after_page = pages if after_page == -1 else after_page
    set_faults(client, mutate_after_delta_pages=after_page, delta_mutations=changes)
    replica: dict[str, dict[str, Any]] = {}
    first = run_round(client, delta_url("inbox"), page_size=10, params={"$select": FIELDS})
    assert len(first.page_sizes) == pages  # the changes landed inside the round
    apply_round(replica, first)
    assert client.get("/_sim/faults").json()["mutate_after_delta_pages"] is None  # fired
    apply_round(replica, run_round(client, first.delta_link))
    truth = listing(client, "inbox")
    assert set(replica) == set(truth)
    for message_id, item in replica.items():
        assert item == truth[message_id]  # the latest version: same changeKey (etag)


# --- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", SYNC_STATE_CODES)
def test_expired_tokens_answer_410(client: httpx.Client, code: str) -> None:
    set_faults(client, delta_expired_code=code)
    first = run_round(client, delta_url("inbox"), page_size=20)
    stale_next = first.next_links[0]
    assert client.post("/_sim/delta/expire").status_code == 200
    for link in (first.delta_link, stale_next):
        response = client.get(link)
        assert response.status_code == 410
        assert error_code(response) == code
        assert "sync state generation is not found" in response.json()["error"]["message"]
    assert client.get(delta_url("inbox")).status_code == 200  # a new round starts afresh


def test_expiry_after_delta_page_n_kills_the_round_mid_way(client: httpx.Client) -> None:
    other = run_round(client, delta_url("inbox", OTHER), page_size=100)
    set_faults(client, expire_delta_tokens_after_pages=3)  # pages served from now on
    page1 = client.get(delta_url("inbox")).json()
    page2 = client.get(page1["@odata.nextLink"]).json()
    page3 = client.get(page2["@odata.nextLink"])
    assert page3.status_code == 200  # the third page itself is served...
    expired = client.get(page3.json()["@odata.nextLink"])  # ...but its link is dead
    assert expired.status_code == 410 and error_code(expired) == "SyncStateNotFound"
    assert client.get(other.delta_link).status_code == 410  # every mailbox's tokens


def test_expiring_one_mailbox_leaves_the_others(client: httpx.Client) -> None:
    mine = run_round(client, delta_url("inbox"), page_size=100)
    theirs = run_round(client, delta_url("inbox", OTHER), page_size=100)
    assert client.post("/_sim/delta/expire", json={"user": OTHER}).status_code == 200
    assert client.get(theirs.delta_link).status_code == 410
    assert client.get(mine.delta_link).status_code == 200


def test_quota_exceeded_fails_delta_only(client: httpx.Client) -> None:
    set_faults(client, delta_quota_exceeded=True)
    response = client.get(delta_url("inbox"))
    assert response.status_code == 403 and error_code(response) == "ErrorQuotaExceeded"
    assert client.get(f"/v1.0/users/{USER}/mailFolders/inbox/messages").status_code == 200
    assert client.get(f"/v1.0/users/{USER}/mailFolders").status_code == 200
    set_faults(client, delta_quota_exceeded=False)
    assert client.get(delta_url("inbox")).status_code == 200


def test_a_malformed_delta_page_then_the_same_link_again(client: httpx.Client) -> None:
    set_faults(client, malformed_delta_page_at=2)
    page1 = client.get(delta_url("inbox"))
    link = page1.json()["@odata.nextLink"]
    broken = client.get(link)
    assert broken.status_code == 200
    with pytest.raises(ValueError):
        broken.json()
    again = client.get(link).json()  # a retry of the same link is served whole
    assert len(again["value"]) == 10 and "@odata.nextLink" in again


def test_delta_switches_are_checked_before_any_is_set(client: httpx.Client) -> None:
    before = client.get("/_sim/faults").json()
    for bad in (
        {"delta_quota_exceeded": True, "delta_expired_code": "Gone"},
        {"delta_quota_exceeded": True, "delta_mutations": [{"op": "move", "count": 1}]},
        {"delta_quota_exceeded": True, "mutate_after_delta_pages": 0},
    ):
        assert client.post("/_sim/faults", json=bad).status_code == 400
    assert client.get("/_sim/faults").json() == before


# --- what is refused ---------------------------------------------------------------------------


def test_links_are_replayed_exactly_as_given(client: httpx.Client) -> None:
    first = client.get(delta_url("inbox")).json()
    with_option = client.get(first["@odata.nextLink"] + "&$select=id")  # (params= replaces)
    assert with_option.status_code == 400
    token = first["@odata.nextLink"].split("$skiptoken=", 1)[1]
    elsewhere = client.get(delta_url("archive"), params={"$skiptoken": token})
    assert elsewhere.status_code == 400
    assert client.get(delta_url("inbox"), params={"$deltatoken": "garbage"}).status_code == 400


@pytest.mark.parametrize(
    "params",
    [
        {"$top": "5"},
        {"$filter": "receivedDateTime ge 2024-01-01T00:00:00Z"},
        {"$orderby": "receivedDateTime desc"},
        {"changeType": "created"},
        {"$select": "id", "$count": "true"},
    ],
)
def test_unsimulated_delta_options_are_refused(
    client: httpx.Client, params: dict[str, str]
) -> None:
    assert client.get(delta_url("inbox"), params=params).status_code == 400


def test_search_and_deleted_folders(client: httpx.Client) -> None:
    folders = client.get(f"/v1.0/users/{USER}/mailFolders").json()["value"]
    search = next(f for f in folders if f.get("@odata.type"))
    assert client.get(delta_url(search["id"])).status_code == 400
    created = client.post(
        f"/_sim/mailboxes/{USER}/mutations", json={"op": "add_folder", "name": "Temp"}
    )
    temp = created.json()["results"][0]["folder"]
    first = run_round(client, delta_url(temp))
    mutate(client, {"op": "delete_folder", "folder": temp})
    gone = client.get(first.delta_link)
    assert gone.status_code == 404 and error_code(gone) == "ErrorItemNotFound"


# --- costs and determinism ---------------------------------------------------------------------


def test_delta_requests_are_counted(sim: GraphSimulator, client: httpx.Client) -> None:
    sim.stats.reset()
    first = run_round(client, delta_url("inbox"), page_size=20)
    mutate(client, {"op": "delete", "count": 2, "folder": "inbox"})
    run_round(client, first.delta_link)
    stats = client.get("/_sim/stats").json()
    pages = len(first.page_sizes) + 1
    assert stats["by_kind"] == {"delta": pages} and stats["delta_pages"] == pages
    assert stats["delta_items"] == len(first.items) and stats["delta_removed"] == 2


def test_in_process_mutations_are_deterministic() -> None:
    outcomes = []
    for _ in range(2):
        with GraphSimulator() as simulator:
            box = simulator.add_mailbox(USER, messages=150, seed=3, folders="default")
            outcome = [
                box.move_messages(3, "inbox", "archive"),
                box.mark_read(2, "inbox"),
                box.delete_messages(2, "sentitems"),
                [m.id for m in box.add_messages(2, "junkemail")],
            ]
            outcomes.append((outcome, box.log.seq))
    assert outcomes[0] == outcomes[1]


def test_a_rendezvous_holds_delta_requests_until_enough_mailboxes_asked(
    sim: GraphSimulator, client: httpx.Client
) -> None:
    """``delta_rendezvous = 2``: a mailbox alone waits out the timeout; two mailboxes that
    ask at the same time both go on as soon as the second one asked."""
    import threading
    import time

    sim.faults.delta_rendezvous = 2
    sim.faults.rendezvous_timeout_s = 0.3
    alone = time.monotonic()
    assert client.get(delta_url("inbox")).status_code == 200
    assert time.monotonic() - alone >= 0.3  # a lower bound: a wait cannot be shorter

    sim.faults.delta_rendezvous = 2  # reassigned: who has asked is forgotten
    # A rendezvous timeout far beyond the client's 10 s read timeout: answered at all, both
    # requests were let go by the second one's arrival, not by the timeout.
    sim.faults.rendezvous_timeout_s = 600.0
    answers: list[int] = []
    first = threading.Thread(
        target=lambda: answers.append(client.get(delta_url("inbox")).status_code)
    )
    first.start()
    assert client.get(delta_url("inbox", OTHER)).status_code == 200
    first.join()
    assert answers == [200]
