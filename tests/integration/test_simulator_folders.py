"""The simulator's folder trees over real HTTP: listing and paging, hidden folders, child
folders, well-known names, search folders, messages per folder, folder mutations."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mailsync.simulator import DEFAULT_TREE, GraphSimulator

USER = "megan@contoso.example"
COUNT = 400
SEARCH_TYPE = "#microsoft.graph.mailSearchFolder"
WELL_KNOWN = ("inbox", "sentitems", "archive", "deleteditems", "drafts", "junkemail")
TOP_LEVEL = ["Inbox", "Sent Items", "Archive", "Deleted Items", "Drafts", "Junk Email"]


@pytest.fixture
def sim() -> Iterator[GraphSimulator]:
    with GraphSimulator() as simulator:
        simulator.add_mailbox(USER, messages=COUNT, seed=5, folders="default")
        yield simulator


@pytest.fixture
def client(sim: GraphSimulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {sim.issue_token()}"}
    with httpx.Client(base_url=sim.url, headers=headers, timeout=10) as graph:
        yield graph


def get(client: httpx.Client, url: str, **params: str) -> dict[str, Any]:
    response = client.get(url, params=params or None)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def walk(client: httpx.Client, url: str, **params: str) -> tuple[list[dict[str, Any]], int]:
    """Every item of a list, following nextLink exactly as given; and the pages it took."""
    items: list[dict[str, Any]] = []
    body = get(client, url, **params)
    pages = 1
    items.extend(body["value"])
    while "@odata.nextLink" in body:
        body = get(client, body["@odata.nextLink"])
        items.extend(body["value"])
        pages += 1
    return items, pages


def folders_url(path: str = "") -> str:
    return f"/v1.0/users/{USER}/mailFolders{path}"


def all_folders(client: httpx.Client) -> list[dict[str, Any]]:
    """The whole tree, as a client must walk it on v1.0: top level, then childFolders."""
    found, pending = [], [folders_url()]
    while pending:
        url = pending.pop(0)
        for folder in walk(client, url, includeHiddenFolders="true", **{"$top": "100"})[0]:
            found.append(folder)
            if folder["childFolderCount"]:
                pending.append(folders_url(f"/{folder['id']}/childFolders"))
    return found


def by_name(folders: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f["displayName"]: f for f in folders}


# --- listing -----------------------------------------------------------------------------------


def test_top_level_is_the_children_of_msgfolderroot_without_hidden_ones(
    client: httpx.Client,
) -> None:
    root = get(client, folders_url("/msgfolderroot"))
    body = get(client, folders_url())
    names = [f["displayName"] for f in body["value"]]
    assert names == [*TOP_LEVEL, "Unread Mail"]
    assert "@odata.nextLink" not in body  # 7 folders: one page of the default 10
    assert {f["parentFolderId"] for f in body["value"]} == {root["id"]}
    assert not any(f["isHidden"] for f in body["value"])
    ids = [f["id"] for f in body["value"]]
    assert len(set(ids)) == len(ids) and all(len(i) > 40 for i in ids)  # opaque, unique


def test_hidden_folders_on_request_and_paging_by_top(
    sim: GraphSimulator, client: httpx.Client
) -> None:
    folders, pages = walk(client, folders_url(), includeHiddenFolders="true", **{"$top": "3"})
    assert pages == 3
    assert [f["displayName"] for f in folders] == [*TOP_LEVEL, "Legal Hold", "Unread Mail"]
    hidden = by_name(folders)["Legal Hold"]
    assert hidden["isHidden"] is True and hidden["totalItemCount"] > 0  # it holds real mail
    first = get(client, folders_url(), includeHiddenFolders="true", **{"$top": "3"})
    link = first["@odata.nextLink"]
    assert link.startswith(f"{sim.url}/v1.0/") and "includeHiddenFolders=true" in link
    assert sim.stats.by_kind["folders"] == pages + 1


def test_default_page_size_is_ten(sim: GraphSimulator, client: httpx.Client) -> None:
    mailbox = sim.mailbox(USER)
    for n in range(5):
        mailbox.add_folder(f"Extra {n}")
    body = get(client, folders_url())
    assert len(body["value"]) == 10 and "$skip=10" in body["@odata.nextLink"]
    assert len(get(client, body["@odata.nextLink"])["value"]) == 2


def test_child_folders_nest_two_deep(client: httpx.Client) -> None:
    inbox = get(client, folders_url("/inbox"))
    children = get(client, folders_url("/inbox/childFolders"))["value"]
    assert [c["displayName"] for c in children] == ["Projects", "Receipts", "Newsletters"]
    assert inbox["childFolderCount"] == 3
    assert {c["parentFolderId"] for c in children} == {inbox["id"]}
    projects = by_name(children)["Projects"]
    assert projects["childFolderCount"] == 1
    falcon = get(client, folders_url(f"/{projects['id']}/childFolders"))["value"][0]
    assert (falcon["displayName"], falcon["childFolderCount"]) == ("Falcon", 0)
    nested = get(
        client, folders_url(f"/inbox/childFolders/{projects['id']}/childFolders/{falcon['id']}")
    )
    assert nested["id"] == falcon["id"]
    assert get(client, folders_url(f"/{falcon['id']}/childFolders"))["value"] == []


def test_the_whole_tree_walked_through_child_folders(client: httpx.Client) -> None:
    folders = by_name(all_folders(client))
    assert set(folders) == {
        *TOP_LEVEL,
        "Legal Hold",
        "Unread Mail",
        "Projects",
        "Falcon",
        "Receipts",
        "Newsletters",
    }
    assert folders["Falcon"]["parentFolderId"] == folders["Projects"]["id"]


def test_well_known_names_resolve_wherever_an_id_does(client: httpx.Client) -> None:
    top = by_name(get(client, folders_url())["value"])
    for name, display in zip(WELL_KNOWN, TOP_LEVEL, strict=True):
        folder = get(client, folders_url(f"/{name}"))
        assert folder["id"] == top[display]["id"]
        assert get(client, folders_url(f"/{name.upper()}"))["id"] == folder["id"]
        listed = get(client, folders_url(f"/{name}/messages"), **{"$count": "true"})
        assert listed["@odata.count"] == folder["totalItemCount"]
        assert get(client, folders_url(f"/{name}/childFolders"))["value"] is not None


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/nope/messages",
        "/nope/messages/delta",
        "/nope/childFolders",
        "/inbox/childFolders/AAMkAnotAchild",
        "/sentitems/childFolders/{projects}",
    ],
)
def test_unknown_folders_are_404_item_not_found(client: httpx.Client, path: str) -> None:
    projects = by_name(get(client, folders_url("/inbox/childFolders"))["value"])["Projects"]
    response = client.get(folders_url(path.format(projects=projects["id"])))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ErrorItemNotFound"


def test_select_on_folders(client: httpx.Client) -> None:
    folders = get(client, folders_url(), **{"$select": "displayName,TOTALITEMCOUNT,bogus"})
    for folder in folders["value"]:
        assert set(folder) - {"@odata.type"} == {"id", "displayName", "totalItemCount"}


# --- messages in folders -------------------------------------------------------------------


def test_every_message_lives_in_exactly_one_folder(client: httpx.Client) -> None:
    seen: dict[str, str] = {}
    for folder in all_folders(client):
        if folder.get("@odata.type") == SEARCH_TYPE:
            continue
        url = folders_url(f"/{folder['id']}/messages")
        messages, _ = walk(client, url, **{"$top": "100", "$select": "parentFolderId,isRead"})
        assert len(messages) == folder["totalItemCount"]
        assert sum(not m["isRead"] for m in messages) == folder["unreadItemCount"]
        for message in messages:
            assert message["parentFolderId"] == folder["id"]
            assert message["id"] not in seen
            seen[message["id"]] = folder["id"]
    everything, _ = walk(client, f"/v1.0/users/{USER}/messages", **{"$top": "1000"})
    assert set(seen) == {m["id"] for m in everything} and len(seen) == COUNT


def test_drafts_and_sent_items_are_the_owners(client: httpx.Client) -> None:
    fields = {"$top": "100", "$select": "from,isDraft,isRead"}
    drafts, _ = walk(client, folders_url("/drafts/messages"), **fields)
    sent, _ = walk(client, folders_url("/sentitems/messages"), **fields)
    assert drafts and sent
    for message in drafts + sent:
        assert message["from"]["emailAddress"]["address"] == USER
        assert message["isRead"] is True
    assert all(m["isDraft"] for m in drafts) and not any(m["isDraft"] for m in sent)


def test_search_folder_shows_unread_inbox_mail_that_lives_elsewhere(
    client: httpx.Client,
) -> None:
    search = by_name(get(client, folders_url())["value"])["Unread Mail"]
    inbox = get(client, folders_url("/inbox"))
    assert search["@odata.type"] == SEARCH_TYPE
    assert search["sourceFolderIds"] == [inbox["id"]] and search["includeNestedFolders"]
    shown, _ = walk(client, folders_url(f"/{search['id']}/messages"), **{"$top": "100"})
    under_inbox = [inbox["id"]] + [
        f["id"]
        for f in all_folders(client)
        if f["displayName"] in ("Projects", "Falcon", "Receipts", "Newsletters")
    ]
    expected = set()
    for folder_id in under_inbox:
        messages, _ = walk(client, folders_url(f"/{folder_id}/messages"), **{"$top": "100"})
        expected |= {m["id"] for m in messages if not m["isRead"]}
    assert {m["id"] for m in shown} == expected and expected
    assert {m["parentFolderId"] for m in shown} <= set(under_inbox)  # never the search folder
    assert search["totalItemCount"] == len(expected) == search["unreadItemCount"]
    one = shown[0]["id"]
    assert client.get(folders_url(f"/{search['id']}/messages/{one}")).status_code == 200
    client.post(f"/_sim/mailboxes/{USER}/mutations", json={"op": "read", "ids": [one]})
    after, _ = walk(client, folders_url(f"/{search['id']}/messages"), **{"$top": "100"})
    assert {m["id"] for m in after} == expected - {one}


def test_one_folder_mailboxes_keep_their_shape(sim: GraphSimulator, client: httpx.Client) -> None:
    sim.add_mailbox("solo@contoso.example", 30, seed=2)
    folders = get(client, "/v1.0/users/solo@contoso.example/mailFolders")["value"]
    assert [(f["displayName"], f["totalItemCount"]) for f in folders] == [("Inbox", 30)]
    missing = client.get("/v1.0/users/solo@contoso.example/mailFolders/archive")
    assert missing.status_code == 404


def test_the_spread_is_deterministic() -> None:
    spreads = []
    for _ in range(2):
        with GraphSimulator() as simulator:
            box = simulator.add_mailbox(USER, messages=300, seed=9, folders=DEFAULT_TREE)
            spreads.append({m.id: m.parentFolderId for m in box.messages()})
    assert spreads[0] == spreads[1]
    assert len(set(spreads[0].values())) >= 9  # every real folder with a weight got mail


# --- folder and message mutations over the admin API -----------------------------------------


def mutate(client: httpx.Client, *mutations: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post(f"/_sim/mailboxes/{USER}/mutations", json=list(mutations))
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def test_a_moved_message_keeps_its_id(client: httpx.Client) -> None:
    archive = get(client, folders_url("/archive"))
    [moved] = mutate(client, {"op": "move", "count": 1, "folder": "inbox", "to": "archive"})
    [message_id] = moved["ids"]
    message = get(client, f"/v1.0/users/{USER}/messages/{message_id}")
    assert message["id"] == message_id and message["parentFolderId"] == archive["id"]
    in_archive = client.get(folders_url(f"/archive/messages/{message_id}"))
    assert in_archive.status_code == 200
    assert client.get(folders_url(f"/inbox/messages/{message_id}")).status_code == 404
    assert get(client, folders_url("/archive"))["totalItemCount"] == archive["totalItemCount"] + 1


def test_adding_and_deleting_a_folder_with_its_mail(client: httpx.Client) -> None:
    inbox = get(client, folders_url("/inbox"))
    [added] = mutate(client, {"op": "add_folder", "name": "Travel", "parent": "inbox"})
    travel = added["folder"]
    [moved] = mutate(client, {"op": "move", "count": 3, "folder": "inbox", "to": travel})
    assert get(client, folders_url(f"/{travel}"))["totalItemCount"] == 3
    assert get(client, folders_url("/inbox"))["childFolderCount"] == inbox["childFolderCount"] + 1
    [deleted] = mutate(client, {"op": "delete_folder", "folder": travel})
    assert sorted(deleted["ids"]) == sorted(moved["ids"])
    assert client.get(folders_url(f"/{travel}")).status_code == 404
    for message_id in moved["ids"]:
        assert client.get(f"/v1.0/users/{USER}/messages/{message_id}").status_code == 404


@pytest.mark.parametrize(
    "mutation",
    [
        {"op": "delete_folder", "folder": "inbox"},
        {"op": "move", "count": 1},
        {"op": "fly"},
        {"op": "add", "count": -1},
        {"op": "read", "folder": "nope"},
        {"op": "edit_draft", "ids": []},
        {"op": "add", "colour": "red"},
    ],
)
def test_bad_mutations_are_refused(client: httpx.Client, mutation: dict[str, Any]) -> None:
    response = client.post(f"/_sim/mailboxes/{USER}/mutations", json=mutation)
    if mutation == {"op": "edit_draft", "ids": []}:  # picks a draft: fine
        assert response.status_code == 200
        return
    assert response.status_code == 400, response.text


def test_admin_view_of_the_tree(client: httpx.Client) -> None:
    tree = client.get(f"/_sim/mailboxes/{USER}/folders", params={"ids": "true"}).json()["value"]
    real = [f for f in tree if not f["isSearchFolder"]]
    assert sum(f["totalItemCount"] for f in real) == COUNT
    assert sum(len(f["ids"]) for f in real) == COUNT
    assert by_name(tree)["Falcon"]["path"] == "Inbox/Projects/Falcon"
    created = client.post(
        "/_sim/mailboxes", json={"user": "x@contoso.example", "messages": 50, "folders": "default"}
    )
    assert created.status_code == 201 and created.json()["folders"] == len(tree)
