"""`mailsync bench --attachments`: what fetching attachment content costs.

A simulated mailbox where a share of the messages (30 % by default) carries one attachment
of 10 KB to 5 MB (log-uniform), a fifth of them repeating one of a few contents (the logo
on many messages), and optionally one very large attachment (``large_mb``: the peak-RSS
check, a 100 MB attachment must be streamed). The sync runs in a fresh process
(mailsync.bench.mailbox's child) and reports, besides its own figures: attachment MB/s
over the whole sync, Graph requests per attachment, the deduplication ratio (attachments
per stored content) and peak RSS against the process's RSS when the flow was called.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from mailsync.errors import MailsyncError


@dataclass(frozen=True)
class AttachmentBenchConfig:
    messages: int = 10_000
    share: float = 0.30  # of the messages, with an attachment
    repeated: float = 0.20  # of the attachments, one of REPEATED_CONTENTS contents
    min_kb: int = 10
    max_kb: int = 5_000
    large_mb: int = 0  # one more attachment of this size (0: none)
    page_size: int = 500
    chunk_size: int = 5_000
    seed: int = 1


REPEATED_CONTENTS = 20


def _roll(key: str) -> float:
    """A uniform number in [0, 1) from a key: the profile is the same in every run."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def profile_attachments(box: Any, config: AttachmentBenchConfig) -> None:
    """Give the mailbox the bench's attachments (instead of the generated ones)."""
    span = config.max_kb / config.min_kb
    for index, message in enumerate(box.messages()):
        with_one = _roll(f"{message.id}:has") < config.share
        large = config.large_mb and index == 0
        if not with_one and not large:
            if message.attachments:
                box.attach(message.id, [], has_attachments=False, replace=True)
            continue
        chosen = []
        if with_one:
            repeated = _roll(f"{message.id}:repeat") < config.repeated
            shared = int(_roll(f"{message.id}:which") * REPEATED_CONTENTS)
            key = f"bench-shared-{shared}" if repeated else f"bench-{message.id}"
            kb = config.min_kb * span ** _roll(key)
            chosen.append(_attachment(f"AAMkA-bench-{index}", key, int(kb * 1024)))
        if large:
            size = config.large_mb * 2**20
            chosen.append(_attachment(f"AAMkA-large-{index}", "bench-large", size))
        box.attach(message.id, chosen, has_attachments=True, replace=True)


def _attachment(attachment_id: str, key: str, length: int) -> dict[str, Any]:
    return {
        "id": attachment_id,
        "name": f"{attachment_id}.bin",
        "contentType": "application/octet-stream",
        "size": length + 300,  # Graph's size is not the byte count
        "isInline": False,
        "_kind": "file",
        "_key": key,
        "_length": length,
    }


def serve(spec: dict[str, Any]) -> None:
    """The simulator process: the profiled mailbox, its URL on the first line, then serve."""
    from mailsync.simulator import GraphSimulator

    config = AttachmentBenchConfig(**spec["config"])
    simulator = GraphSimulator()
    box = simulator.add_mailbox(spec["mailbox"], config.messages, config.seed)
    profile_attachments(box, config)
    server = simulator.bind()
    print(simulator.url, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        simulator.stop()


@contextmanager
def profiled_simulator(mailbox: str, config: AttachmentBenchConfig) -> Iterator[str]:
    code = (
        "import json, sys; from mailsync.bench.attachments import serve; "
        "serve(json.loads(sys.argv[1]))"
    )
    spec = json.dumps({"mailbox": mailbox, "config": asdict(config)})
    proc = subprocess.Popen([sys.executable, "-c", code, spec], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise MailsyncError(f"the simulator did not start (exit {proc.poll()})")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def run_bench_attachments(config: AttachmentBenchConfig, child: Sequence[str]) -> dict[str, Any]:
    """The whole benchmark; ``child`` runs mailsync.bench.mailbox.measure_sync."""
    from mailsync.bench.mailbox import child_env, fresh_database, run_sync_child
    from mailsync.prefect_server import prefect_api

    mailbox = f"bench-att-{uuid.uuid4().hex[:8]}@contoso.example"
    with prefect_api() as (api_url, _, _), profiled_simulator(mailbox, config) as sim_url:
        with fresh_database() as database_url:
            env = child_env(api_url, database_url, sim_url, MAILSYNC_ATTACHMENTS="content")
            spec = {
                "mailbox": mailbox,
                "chunk_size": config.chunk_size,
                "page_size": config.page_size,
                "graph_url": sim_url,
            }
            measured = run_sync_child(child, spec, env)
        stats = httpx.get(f"{sim_url}/_sim/stats").raise_for_status().json()
    return summarize(config, measured, stats)


def summarize(
    config: AttachmentBenchConfig, measured: dict[str, Any], stats: dict[str, Any]
) -> dict[str, Any]:
    summary = measured["summary"]
    sync_s = measured["job_completed_at"] - measured["called_at"]
    attachments = summary["attachments_stored"] + summary["attachments_deduplicated"]
    requests = stats["data_requests"] - summary["api_calls"]  # the pages' are the job's
    return {
        "config": asdict(config),
        "status": summary["status"],
        "sync_s": round(sync_s, 3),
        "attachments": attachments,
        "attachments_stored": summary["attachments_stored"],
        "attachments_deduplicated": summary["attachments_deduplicated"],
        "attachments_failed": summary["attachments_failed"],
        "attachment_mb": round(summary["attachment_bytes"] / 2**20, 1),
        "attachment_mb_per_s": round(summary["attachment_bytes"] / 2**20 / sync_s, 1),
        "requests_per_attachment": round(requests / max(1, attachments), 2),
        "dedup_ratio": round(attachments / max(1, summary["attachments_stored"]), 3),
        "baseline_rss_mb": round(measured["baseline_rss_mb"], 1),
        "peak_rss_mb": round(measured["peak_rss_mb"], 1),
    }
