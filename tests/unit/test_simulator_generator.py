"""The generated mailbox: deterministic, Graph-shaped, with deliberate timestamp ties."""

from __future__ import annotations

import itertools
import json
import random
import re
from datetime import UTC, datetime, timedelta

import pytest

from mailsync.simulator.generator import (
    DEFAULT_START,
    Message,
    folder_id_for,
    generate_messages,
    iso,
    new_message,
    parse_iso,
)

MAILBOX = "adele@contoso.example"
ID_PATTERN = re.compile(r"^AAkALg[A-Za-z0-9_-]{34,54}$")
TIME_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@pytest.fixture(scope="module")
def messages() -> list[Message]:
    return generate_messages(5000, seed=11, mailbox=MAILBOX)


def test_same_seed_gives_identical_messages() -> None:
    first = generate_messages(300, seed=5, mailbox=MAILBOX)
    second = generate_messages(300, seed=5, mailbox=MAILBOX)
    assert [m.id for m in first] == [m.id for m in second]
    assert [m.receivedDateTime for m in first] == [m.receivedDateTime for m in second]
    assert first == second  # every field, bodies included


def test_another_seed_gives_other_messages() -> None:
    first = generate_messages(50, seed=5, mailbox=MAILBOX)
    other = generate_messages(50, seed=6, mailbox=MAILBOX)
    assert not {m.id for m in first} & {m.id for m in other}
    assert [m.receivedDateTime for m in first] != [m.receivedDateTime for m in other]


def test_mailboxes_never_share_ids() -> None:
    a = generate_messages(2000, seed=1, mailbox="a@contoso.example")
    b = generate_messages(2000, seed=1, mailbox="b@contoso.example")
    assert len({m.id for m in a}) == 2000
    assert not {m.id for m in a} & {m.id for m in b}


def test_ids_look_like_immutable_graph_ids(messages: list[Message]) -> None:
    assert len({m.id for m in messages}) == len(messages)
    for m in messages:
        assert ID_PATTERN.match(m.id), m.id
        assert 40 <= len(m.id) <= 60
        assert "/" not in m.id


def test_received_times_are_sorted_second_precision_steps(messages: list[Message]) -> None:
    assert messages[0].receivedDateTime == "2024-01-01T00:00:00Z"
    previous = None
    for m in messages:
        assert TIME_PATTERN.match(m.receivedDateTime)
        assert parse_iso(m.receivedDateTime) == m.received
        if previous is not None:
            step = m.received_ts - previous.received_ts
            assert 0 <= step <= 600
            assert (m.received_ts, m.id) > (previous.received_ts, previous.id)
        previous = m


def test_some_messages_share_a_timestamp(messages: list[Message]) -> None:
    ties = sum(a.received_ts == b.received_ts for a, b in itertools.pairwise(messages))
    assert 0.03 < ties / len(messages) < 0.08  # about 5%


def test_sent_is_a_little_before_received(messages: list[Message]) -> None:
    for m in messages[:500]:
        gap = parse_iso(m.receivedDateTime) - parse_iso(m.sentDateTime)
        assert timedelta(seconds=1) <= gap <= timedelta(seconds=121)
        assert m.createdDateTime == m.receivedDateTime


def test_bodies_are_1_to_6_kb_of_html(messages: list[Message]) -> None:
    sizes = [m.body_size for m in messages]
    assert min(sizes) >= 1024
    assert max(sizes) <= 6144
    assert 2500 < sum(sizes) / len(sizes) < 4500
    sample = messages[7]
    assert sample.body["contentType"] == "html"
    content = sample.body["content"]
    assert len(content) == sample.body_size
    assert content.startswith("<html>") and content.rstrip().endswith("</html>")
    assert sample.bodyPreview and len(sample.bodyPreview) <= 100
    assert sample.bodyPreview in content


def test_body_json_fragment_decodes_to_the_body(messages: list[Message]) -> None:
    for m in messages[:50]:
        assert json.loads(b'"' + m.body_json_fragment() + b'"') == m.body_content


def test_addresses_and_flags_are_graph_shaped(messages: list[Message]) -> None:
    owner = {"emailAddress": {"name": "Adele", "address": MAILBOX}}
    for m in messages[:300]:
        assert set(m.from_["emailAddress"]) == {"name", "address"}
        assert m.sender == m.from_
        assert m.toRecipients[0] == owner
        assert all("@" in r["emailAddress"]["address"] for r in m.toRecipients + m.ccRecipients)
        assert m.importance in {"low", "normal", "high"}
        assert re.match(r"^<[0-9a-f]+\.\d+@contoso\.example>$", m.internetMessageId)
        assert m.conversationId.startswith("AAQkA")
        assert m.parentFolderId == folder_id_for(MAILBOX)
    assert any(m.ccRecipients for m in messages)
    assert any(not m.ccRecipients for m in messages)
    assert 0.5 < sum(m.isRead for m in messages) / len(messages) < 0.9
    conversations = {m.conversationId for m in messages}
    assert len(conversations) < len(messages)  # threads exist


def test_about_15_percent_have_attachment_metadata(messages: list[Message]) -> None:
    with_attachments = [m for m in messages if m.hasAttachments]
    assert 0.11 < len(with_attachments) / len(messages) < 0.19
    for m in messages:
        assert bool(m.attachments) == m.hasAttachments
    for attachment in with_attachments[0].attachments:
        assert set(attachment) == {"id", "name", "contentType", "size", "isInline"}
        assert attachment["size"] > 0


def test_to_graph_uses_graph_names_and_honours_select(messages: list[Message]) -> None:
    message = next(m for m in messages if m.hasAttachments)
    full = message.to_graph()
    assert full["from"] == message.from_
    assert "attachments" not in full
    assert full["body"]["content"] == message.body_content
    assert set(message.to_graph(["subject", "nonsense"])) == {"id", "subject"}
    assert message.to_graph(expand_attachments=True)["attachments"] == message.attachments


def test_new_message_arrives_when_told_with_a_fresh_id(messages: list[Message]) -> None:
    received = datetime(2025, 6, 1, 12, 0, 5, tzinfo=UTC)
    added = new_message(MAILBOX, len(messages), received, random.Random(1), seed=11)
    assert added.receivedDateTime == "2025-06-01T12:00:05Z"
    assert added.id not in {m.id for m in messages}
    assert ID_PATTERN.match(added.id)


def test_iso_formats_epoch_seconds() -> None:
    assert iso(int(DEFAULT_START.timestamp()) + 7) == "2024-01-01T00:00:07Z"
    assert iso(int(datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC).timestamp())) == (
        "2024-02-29T23:59:59Z"
    )


def test_a_large_mailbox_is_generated_whole() -> None:
    # How fast is `mailsync bench`'s to measure: a unit test asserts no wall-clock time.
    generated = generate_messages(20_000, seed=2)
    assert len(generated) == 20_000
    assert len({m.id for m in generated}) == 20_000
