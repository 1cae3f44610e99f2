"""One bytea value into Postgres, and out of it, without holding it whole in memory.

In: a bytea parameter is one Python ``bytes`` (plus libpq's copy of it in its send buffer):
twice a 100 MB attachment. A binary COPY is written as it is read, so the value goes from
a file to the server 1 MiB at a time: the row's header (one field, its length), the bytes,
the trailer (PostgreSQL's COPY BINARY format, docs: sql-copy.html "Binary Format").

Out: a COPY TO sends a row as one message, whole; so the value is read in slices of 1 MiB
(``substring``), which an EXTERNAL (uncompressed) column serves from the slice's TOAST
chunks only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import IO, Any

from psycopg import sql as pgsql

from mailsync.store.db import Session

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)  # signature, flags, extension
_TRAILER = struct.pack("!h", -1)
_CHUNK = 1 << 20


def copy_bytea(session: Session, table: str, column: str, source: IO[bytes], size: int) -> None:
    """COPY one row of one bytea ``column`` into ``table`` from ``source`` (``size`` bytes,
    read from its current position), in the session's transaction (pipelined or not)."""
    statement = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        pgsql.Identifier(table), pgsql.Identifier(column)
    )
    with session.outside_pipeline(), session.conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(_HEADER + struct.pack("!hi", 1, size))
        left = size
        while left > 0:
            chunk = source.read(min(_CHUNK, left))
            if not chunk:
                raise ValueError(f"the content ended {left} bytes short of {size}")
            copy.write(chunk)
            left -= len(chunk)
        copy.write(_TRAILER)


def read_bytea(session: Session, query: str, size: int, /, **params: Any) -> Iterator[bytes]:
    """A ``size``-byte value in slices of at most 1 MiB, read in the session's transaction:
    ``query`` answers ``part``, the slice of ``length`` bytes from byte ``start`` (1-based)."""
    start = 1
    while start <= size:
        row = session.one(query, start=start, length=min(_CHUNK, size - start + 1), **params)
        part = bytes(row["part"]) if row and row["part"] is not None else b""
        if not part:  # deleted meanwhile (retention), or shorter than its recorded size
            raise ValueError(f"the content ended {size - start + 1} bytes short of {size}")
        yield part
        start += len(part)
