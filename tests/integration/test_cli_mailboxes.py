"""Addresses with the characters real mailboxes have (apostrophes, plus signs) sync end to end
through `mailsync sync`: validated, percent-encoded into Graph's URLs, stored."""

from __future__ import annotations

import json

import psycopg
import pytest
from typer.testing import CliRunner

from mailsync.cli import app
from mailsync.simulator import GraphSimulator


def stored(url: str, mailbox: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT e.graph_id FROM emails e JOIN stores s ON s.id = e.store_id"
            " WHERE s.mailbox = %s",
            (mailbox,),
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize("mailbox", ["o'brien@contoso.example", "support+billing@contoso.example"])
def test_a_mailbox_with_an_apostrophe_or_a_plus_syncs(
    database_url: str, simulator: GraphSimulator, mailbox: str
) -> None:
    box = simulator.add_mailbox(mailbox, 120, seed=41)
    simulator.add_mailbox("obrien@contoso.example", 7)  # look-alikes must not be the ones read
    simulator.add_mailbox("support billing@contoso.example", 5)

    result = CliRunner().invoke(app, ["sync", "--mailbox", mailbox, "--chunk-size", "50", "--json"])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["mailbox"], summary["status"]) == (mailbox, "completed")
    assert summary["emails_stored"] == 120 and summary["chunks_failed"] == 0
    ids = stored(database_url, mailbox)
    assert len(ids) == len(set(ids)) and set(ids) == box.ids()
