"""`mailsync cleanup`: run the cleanup flow once, in this process."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from mailsync.cli.common import JsonOpt, configure_runtime, console, fail, out, prepare_flow_run

StuckAfter = Annotated[
    float | None,
    typer.Option(
        "--stuck-after",
        metavar="SECONDS",
        help="A processing chunk without a heartbeat for this long is stuck "
        "(default: MAILSYNC_STUCK_AFTER_S, 30).",
    ),
]


def cleanup(stuck_after: StuckAfter = None, as_json: JsonOpt = False) -> None:
    """Recover stuck chunks (and resume or close their jobs here), then apply retention.

    Exits 0 without doing anything when another cleanup is running.
    """
    from mailsync.flows.cleanup import cleanup as cleanup_flow  # the flow's imports, when it runs

    if stuck_after is not None and stuck_after <= 0:
        fail(f"--stuck-after must be positive, got {stuck_after:g}")
    runtime = configure_runtime(stuck_after_s=stuck_after)
    prepare_flow_run(runtime, graph=False)  # Graph only if a job is resumed: not required
    result = cleanup_flow(stuck_after_s=runtime.settings.stuck_after_s)
    if "skipped" in result:
        console.print(f"cleanup skipped: {result['skipped']}")
    if as_json:
        out.print(json.dumps(result), soft_wrap=True, highlight=False)
    else:
        out.print(_table(result))


def _table(result: dict[str, Any]) -> Table:
    table = Table(title="cleanup", show_header=False)
    for key, value in result.items():
        table.add_row(key, str(value))
    return table
