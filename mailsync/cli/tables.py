"""Tables that read in the terminal they are printed to, 80 columns included.

Rich fits a table to the console by folding every column: in 80 columns (a pipe, CI, a log
file) `mailbox list` showed each address over three lines and headers cut to ``ue``. Here
a table is declared as columns in order of importance: identifiers (addresses, ids) are
never folded, the other columns keep at least their header's longest word, and the least
important columns are left out until what remains fits. Their order on screen stays the
declared one. ``--json`` prints every field whatever the width.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

# What a column costs beyond its text: one space of padding each side, one border.
_PER_COLUMN = 3
_EDGE = 1
# A text column that may fold keeps at least this much (or its header's longest word).
_FOLD_MIN = 10


@dataclass(frozen=True)
class Col:
    """A column: its key in the row, its header, and how it gives way to a narrow terminal.

    Every column but a ``fold`` one is shown whole on one line (an address, an id, a time,
    a count), or not at all; ``rank``: the lower, the longer it stays (0: always shown);
    ``fold``: free text (an error) that may wrap over lines and takes what width is left."""

    key: str
    header: str
    rank: int = 5
    fold: bool = False
    justify: Literal["left", "right"] = "left"


def print_fitted(
    console: Console,
    title: str,
    columns: Sequence[Col],
    rows: Iterable[Mapping[str, Any]],
    cell: Callable[[Any], str] = lambda value: "" if value is None else str(value),
) -> None:
    """Print ``rows`` as a table of as many of ``columns`` as fit ``console.width``.

    Should the columns that always show not fit (an address of 90 characters in 80
    columns), the table is printed wider than the console rather than fold an identifier:
    a line the terminal wraps can still be copied whole, a folded address cannot."""
    texts = [{col.key: cell(row.get(col.key)) for col in columns} for row in rows]
    kept, width = _fitting(columns, texts, console.width)
    table = Table(title=title)
    for col in kept:
        table.add_column(
            col.header,
            justify=col.justify,
            no_wrap=not col.fold,
            overflow="fold" if col.fold else "ellipsis",
            min_width=_needed(col, texts),
        )
    for text in texts:
        table.add_row(*(text[col.key] for col in kept))
    console.print(table, width=max(width, console.width), crop=False)


def _fitting(
    columns: Sequence[Col], texts: list[dict[str, str]], width: int
) -> tuple[list[Col], int]:
    """The columns to show (by rank, up to the first that does not fit: a narrow terminal
    never shows a minor column in place of a major one; in their declared order) and the
    width they need at least."""
    chosen: list[Col] = []
    used = _EDGE
    for col in sorted(columns, key=lambda c: c.rank):  # stable: equal ranks keep their order
        need = _needed(col, texts) + _PER_COLUMN
        if col.rank > 0 and used + need > width:
            break
        chosen.append(col)
        used += need
    return [col for col in columns if col in chosen], used


def _needed(col: Col, texts: list[dict[str, str]]) -> int:
    """What a column needs at least: a folding one its minimum, any other its widest cell
    (the header's too: a header is never cut to ``ue``)."""
    if col.fold:
        return _fold_min(col)
    return max([len(col.header), *(len(text[col.key]) for text in texts)])


def _fold_min(col: Col) -> int:
    return max([_FOLD_MIN, *(len(word) for word in col.header.split())])
