"""The chunk report's output for `mailsync report`: rich tables, CSV/markdown files, a PNG."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mailsync.report import TABLE_TITLES, ChunkReport, display, markdown_table, summary_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis

# The columns the terminal shows of each table, with their headers.
_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "status": (("status", "status"), ("count", "chunks"), ("percent", "%")),
    "stores": (
        ("mailbox", "mailbox"),
        ("folder", "folder"),
        ("chunks", "chunks"),
        ("completed_chunks", "completed"),
        ("failed_chunks", "failed"),
        ("open_chunks", "open"),
        ("success_rate", "success %"),
        ("emails_synced", "emails"),
        ("last_sync", "last completed (UTC)"),
    ),
    "errors": (
        ("error_category", "category"),
        ("chunks", "chunks"),
        ("failed_chunks", "failed"),
        ("open_chunks", "still open"),
        ("sample_message", "latest message"),
    ),
    "throughput": (
        ("job_id", "job"),
        ("mailbox", "mailbox"),
        ("job_status", "status"),
        ("chunks", "chunks"),
        ("emails", "emails"),
        ("processing_time_ms", "work ms"),
        ("emails_per_s", "emails/s"),
        ("api_calls_per_email", "API calls/email"),
    ),
    "durations": (
        ("outcome", "chunks that"),
        ("chunks", "chunks"),
        ("p50_ms", "p50"),
        ("p95_ms", "p95"),
        ("p99_ms", "p99"),
        ("max_ms", "max"),
    ),
    "attempts": (
        ("attempts", "attempts"),
        ("chunks", "chunks"),
        ("completed", "completed"),
        ("failed", "failed"),
        ("percent", "%"),
    ),
    "trend": (
        ("bucket", "from"),
        ("chunks", "chunks"),
        ("completed", "completed"),
        ("failed", "failed"),
        ("open", "open"),
        ("success_rate", "success %"),
    ),
}
_MAX_ROWS = 25  # the terminal shows the worst stores and the newest jobs; files hold them all
_RED_WHEN_POSITIVE = {"failed_chunks", "failed"}


# -- terminal -------------------------------------------------------------------------------


def print_tables(console: Console, chunk_report: ChunkReport) -> None:
    console.print(Text(f"Chunk report · {chunk_report.scope.describe()}", style="bold"))
    if chunk_report.is_empty:
        console.print(Text(str(chunk_report.message), style="yellow"))
        return
    console.print(Text(summary_text(chunk_report)))
    for name, frame in chunk_report.tables().items():
        if len(frame):
            console.print(rich_table(name, frame))


def rich_table(name: str, frame: pd.DataFrame) -> Table:
    columns = _COLUMNS[name]
    shown = frame.tail(_MAX_ROWS) if name == "trend" else frame.head(_MAX_ROWS)
    caption = f"{len(shown)} of {len(frame)} rows" if len(shown) < len(frame) else None
    table = Table(title=TABLE_TITLES[name], caption=caption, title_justify="left")
    for column, header in columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column])
        table.add_column(header, justify="right" if numeric else "left")
    for row in shown.to_dict("records"):
        table.add_row(*(_cell(column, row[column]) for column, _ in columns))
    return table


def _cell(column: str, value: object) -> Text:
    text = display(value)
    if column == "job_id":
        text = text[:8]  # enough to find the job; the files carry the whole id
    elif column == "sample_message" and len(text) > 80:
        text = text[:79] + "…"
    red = column in _RED_WHEN_POSITIVE and isinstance(value, int | float) and value > 0
    return Text(text, style="bold red" if red else "")


# -- files ----------------------------------------------------------------------------------


def write_files(chunk_report: ChunkReport, out_dir: Path, output_format: str) -> list[Path]:
    """One file per table, `chunk-report-<table>.csv|md`, header rows even when empty."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in chunk_report.tables().items():
        if output_format == "csv":
            path = out_dir / f"chunk-report-{name}.csv"
            frame.to_csv(path, index=False)
        else:
            path = out_dir / f"chunk-report-{name}.md"
            path.write_text(
                f"# {TABLE_TITLES[name]}\n\n{chunk_report.scope.describe()}\n\n"
                f"{markdown_table(frame)}\n",
                encoding="utf-8",
            )
        written.append(path)
    return written


# -- chart ----------------------------------------------------------------------------------


def write_chart(chunk_report: ChunkReport, path: Path) -> None:
    """Success rate over time above, chunk outcomes per store below, as a PNG."""
    # A bare Figure renders with Agg and touches no pyplot state or GUI backend.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 8.5), layout="constrained")
    trend_axes, stores_axes = figure.subplots(2, 1, height_ratios=(1, 1.2))
    figure.suptitle(f"Chunk report · {chunk_report.scope.describe()}")
    if chunk_report.is_empty:
        for axes in (trend_axes, stores_axes):
            axes.text(0.5, 0.5, str(chunk_report.message), ha="center", va="center", wrap=True)
            axes.set_axis_off()
    else:
        _plot_trend(trend_axes, chunk_report)
        _plot_stores(stores_axes, chunk_report.stores)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=110)


def _plot_trend(axes: Axes, chunk_report: ChunkReport) -> None:
    trend, window = chunk_report.trend, chunk_report.scope.window
    step = pd.Timedelta(hours=1) if window.bucket == "hour" else pd.Timedelta(days=1)
    starts = trend["bucket"].dt.tz_convert(None)  # naive UTC: what matplotlib's dates expect
    counts = axes.twinx()
    # Each bar covers its hour (day) from its start; the rate sits in the middle of it.
    bars = {"width": (step * 0.9).total_seconds() / 86_400, "align": "edge"}  # in days
    counts.bar(starts, trend["completed"], color="#8fd19e", label="completed", **bars)
    counts.bar(
        starts, trend["failed"], bottom=trend["completed"], color="#f1948a", label="failed", **bars
    )
    counts.set_ylabel("chunks")
    _integer_ticks(counts.yaxis)
    axes.set_zorder(counts.get_zorder() + 1)  # the rate line above the bars
    axes.patch.set_visible(False)
    axes.plot(
        starts + step / 2, trend["success_rate"], marker="o", color="#1f4e79", label="success rate"
    )
    # the whole window, and the whole of its first and last (current) hour or day
    axes.set_xlim(
        min(_naive_utc(window.since), starts.min()),
        max(_naive_utc(window.until), starts.max() + step),
    )
    axes.set_ylim(0, 105)
    axes.set_ylabel("success rate (%)")
    axes.set_title(f"Success rate per {window.bucket} (UTC)")
    axes.grid(alpha=0.3)
    handles = axes.get_legend_handles_labels()[0] + counts.get_legend_handles_labels()[0]
    axes.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=3)


def _naive_utc(moment: datetime) -> pd.Timestamp:
    return pd.Timestamp(moment).tz_convert("UTC").tz_localize(None)


def _plot_stores(axes: Axes, stores: pd.DataFrame) -> None:
    shown = stores.head(15).iloc[::-1]  # problem stores first, drawn at the top
    labels = [f"{row.mailbox} ({row.folder})" for row in shown.itertuples()]
    left = pd.Series(0, index=shown.index)
    for column, label, color in (
        ("completed_chunks", "completed", "#2e8b57"),
        ("failed_chunks", "failed", "#c0392b"),
        ("open_chunks", "open", "#a6acaf"),
    ):
        axes.barh(labels, shown[column], left=left, color=color, label=label)
        left = left + shown[column]
    _integer_ticks(axes.xaxis)
    axes.set_xlabel("chunks")
    axes.set_title("Chunk outcomes per store" + (", the first 15" if len(stores) > 15 else ""))
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=3)


def _integer_ticks(axis: Axis) -> None:
    """Chunks come whole: no tick at 2.5. An axis's default locator is an AutoLocator, a
    MaxNLocator that can be told so."""
    from matplotlib.ticker import MaxNLocator

    cast(MaxNLocator, axis.get_major_locator()).set_params(integer=True)
