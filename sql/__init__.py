"""The project's SQL, kept as SQL: named queries and the migrations.

Every ``*.sql`` file beside this one (``queries.sql`` for the sync, others for cleanup and
reports) is a series of blocks, each headed ``-- name: some_query`` followed by
``-- a description`` line(s) and one statement with ``%(param)s`` placeholders.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, LiteralString]:
    """Split a queries file into {name: statement}; duplicate names are an error."""
    parts = _HEADER.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        statement = "\n".join(
            line for line in body.strip().splitlines() if not line.startswith("--")
        ).strip()
        queries[name] = statement  # trusted: the project's own files
    return queries


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration, in version order."""
    found = []
    for entry in resources.files(__name__).joinpath("migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found)


def load_queries() -> dict[str, LiteralString]:
    """All named queries of all query files; a name defined in two files is an error."""
    merged: dict[str, LiteralString] = {}
    for entry in sorted(resources.files(__name__).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, statement in parse_queries(entry.read_text("utf-8")).items():
                if name in merged:
                    raise ValueError(f"query {name!r} is defined twice ({entry.name})")
                merged[name] = statement
    return merged


queries = load_queries()
