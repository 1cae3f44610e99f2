"""deployments/automations/sync-failed.yaml, as docs/reports.md tells an operator to use it:
created with `prefect automation create --from-file` on the session's Prefect server, read
back, and seen to notify (a webhook block pointing at this test) when a real sync-mailbox
flow run fails."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client

from mailsync.errors import SyncIncompleteError
from tests.e2e.helpers import BIN_DIR, REPO_ROOT, child_env, run_cli, wait_for

AUTOMATION_FILE = REPO_ROOT / "deployments" / "automations" / "sync-failed.yaml"
PLACEHOLDER = "block_document_id: NOTIFICATION_BLOCK_ID"


class Receiver:
    """An HTTP endpoint on loopback that keeps the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def create_from_file(prefect_api_url: str, block_id: uuid.UUID, tmp_path: Path) -> str:
    """docs/reports.md's two steps: the block id put in the file, then the CLI; the name made
    unique so the session's other automations are not touched."""
    name = f"mailsync-sync-failed-{uuid.uuid4().hex[:8]}"
    text = AUTOMATION_FILE.read_text()
    assert text.count(PLACEHOLDER) == 1
    text = text.replace(PLACEHOLDER, f"block_document_id: {block_id}").replace(
        "name: mailsync-sync-failed", f"name: {name}"
    )
    path = tmp_path / "sync-failed.yaml"
    path.write_text(text)
    command = [str(BIN_DIR / "prefect"), "automation", "create", "--from-file", str(path)]
    output = run_cli(command, child_env(PREFECT_API_URL=prefect_api_url))
    assert "created" in output.lower(), output
    return name


def test_the_automation_file_creates_an_alert_on_failed_sync_runs(
    prefect_api_url: str, receiver: Receiver, tmp_path: Path, runtime: Any, simulator: Any
) -> None:
    block = CustomWebhookNotificationBlock(
        name="mailsync-test",
        url=receiver.url,
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    )
    block_id = block.save(f"mailsync-alerts-{uuid.uuid4().hex[:8]}")
    name = create_from_file(prefect_api_url, block_id, tmp_path)

    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(name)
    assert len(found) == 1
    automation = found[0]
    trigger = automation.trigger
    assert automation.enabled
    assert trigger.type == "event" and trigger.expect == {"prefect.flow-run.Failed"}
    related = trigger.match_related.root  # one ResourceSpecification: the flow, by name
    assert related["prefect.resource.role"] == "flow"
    assert sorted(related["prefect.resource.name"]) == ["sync-all", "sync-mailbox"]
    assert [a.type for a in automation.actions] == ["send-notification"]
    assert automation.actions[0].block_document_id == block_id

    # A real failed run notifies: a sync whose second chunk meets a malformed page.
    from mailsync.flows.sync_mailbox import sync_mailbox

    simulator.add_mailbox("alert@contoso.example", 300, seed=5)
    simulator.faults.malformed_page_at = 4
    with pytest.raises(SyncIncompleteError):
        sync_mailbox(
            mailbox="alert@contoso.example",
            folder="inbox",
            chunk_size=100,
            page_size=50,
            graph_url=simulator.url,
        )
    # Another test's failed sync-mailbox run (an xdist worker beside this one) may notify too:
    # look for this run's, a partial failure.
    notices = wait_for(
        "the automation's notification",
        lambda: [b for b in receiver.bodies if "partial_failure" in b.get("body", "")],
        timeout_s=60,
    )
    notice = notices[0]
    assert "sync-mailbox" in notice["subject"] and "failed" in notice["subject"]
    assert "partial_failure" in notice["body"]
