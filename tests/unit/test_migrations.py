"""Migrations are history: the committed files are pinned, and the migrator's check of a
database's record against them is pure logic (mailsync.store.migrate)."""

from __future__ import annotations

from mailsync.store.migrate import (
    AppliedMigration,
    MigrationFile,
    history_problems,
    migration_files,
)
from mailsync.store.schema import MARKER, normalise, render, split

# The sha256 of every committed migration (`sha256sum sql/migrations/*.sql`). A new
# migration adds its line here; an existing line never changes.
PINNED = {
    "0001_schema.sql": "41cbd0f7c61159adc1ab78ee233739a4b70873ffbd7931c151122d95271908e3",
    "0002_chunk_state_machine.sql": "602c32877e149fc4c0bc7b75e8852bfca486a2b08a4331e7b807aabae501cb4e",
    "0003_retention.sql": "5322e5ef8c602793462ec35f6387ac492a7df9607fb3183534126cd6e2881bc9",
    "0004_tenant_isolation.sql": "a2437e98127b9e432285ff7a0aa2885bece85f6b673882f113069d88698cadb1",
    "0005_claim_chunk.sql": "0bf692081d52d03bfbd3379eeb149382bd8099ef7f475c9599a59675084d070c",
    "0006_whole_mailbox.sql": "7ac71050764d293465593861c7fe496511cfba2da45b0e200474573da251e11a",
    "0007_mailbox_registry.sql": "f86f76f7083c5f520880ac4563404c9ab4f1762bf4c9a36023d1fc685000427b",
    "0008_release_chunk.sql": "d2e36304e5ce634072357287cd2598060ff2a6426af46524b7f9016ae9db4428",
    "0009_lean_writes.sql": "d3f0e9158c47ad196cdb0498ff9fdcf6b9be2cecdf12117d63d9192c0c64812d",
    "0010_delta_chunks.sql": "8308ef4a2018d4f7aa695c3c744b9edb0d93af11888371df5c5277cec3ec4af1",
    "0011_removals_of_finished_folders.sql": "2c9360b28b1930454fe6610d60ba2dd0421083705e34241c4ad4a0bf610945db",
    "0012_page_fence.sql": "812b157b83f16494e396aa4f321a669b4b8b680ed77a368cb79072ad5a094b29",
    "0013_take_back_chunk.sql": "12ebdbfed0c5a1706fecd8c939fb6d3adb685bc7b3a64c12a3e7e4aa84b4761d",
    "0014_window_chunks.sql": "750d9bc4a8fedb0463e7266bebb59fbdccf522a0790d59d53ae734e0b54575fa",
    "0015_attachment_content.sql": "d33fad466a77ff42b6c06ec2da7515383469a4330227d0d00e880c8d11eec8c2",
    "0016_folder_delta_and_batches.sql": "dac2b816ca27ce69a04bb4064482c24a8de0b1d47601c040ff96fdd826b394a1",
    "0017_change_notifications.sql": "dbaa567124d02b59f0648756655e315cd7bba1929f97e90c63671f7e95c0f575",
    "0018_changed_mailboxes.sql": "7e541bb2b54d2baef7344f89a228708256294ecd075a868df6370b1901e090ce",
    "0019_graph_request_window.sql": "ef2cda8c23d3cbffd0fd4635a96c3b6cc5591524ed913d5daa1084957c1d2696",
}


def test_the_committed_migrations_are_the_pinned_ones() -> None:
    files = {file.filename: file.sha256 for file in migration_files()}
    changed = sorted(name for name in PINNED.keys() & files.keys() if PINNED[name] != files[name])
    gone = sorted(PINNED.keys() - files.keys())
    assert not changed and not gone, (
        f"applied migrations changed {changed} or went {gone}: never edit an applied "
        "migration, add a new one (restore these from git; docs/migrations.md)"
    )
    new = {name: files[name] for name in sorted(files.keys() - PINNED.keys())}
    assert not new, "a new migration: pin it in PINNED here:\n" + "\n".join(
        f'    "{name}": "{digest}",' for name, digest in new.items()
    )


def test_migrations_are_numbered_without_gaps() -> None:
    assert [file.version for file in migration_files()] == list(
        range(1, len(migration_files()) + 1)
    )


FILES = [MigrationFile(1, "one", "SELECT 1;"), MigrationFile(2, "two", "SELECT 2;")]


def recorded(version: int, name: str, sql: str | None) -> AppliedMigration:
    return AppliedMigration(
        version, name, MigrationFile(version, name, sql).sha256 if sql else None
    )


def test_a_record_that_matches_its_files_has_no_problems() -> None:
    assert history_problems([recorded(1, "one", "SELECT 1;")], FILES) == []
    assert history_problems([recorded(1, "one", None), recorded(2, "two", None)], FILES) == []


def test_an_edited_file_is_named() -> None:
    problems = history_problems([recorded(1, "one", "SELECT 1; -- as applied")], FILES)
    assert len(problems) == 1 and "sql/migrations/0001_one.sql changed" in problems[0]


def test_a_renamed_or_removed_file_is_named_even_before_its_digest_is_adopted() -> None:
    files = [FILES[0], MigrationFile(3, "three", "SELECT 3;")]
    problems = history_problems([recorded(1, "uno", None), recorded(2, "two", None)], files)
    assert problems == [
        "0001_uno.sql was applied, but that number is now 0001_one.sql",
        "0002_two.sql was applied, but sql/migrations/ has no such file",
    ]


def test_a_database_upgraded_by_a_newer_version_is_told_so() -> None:
    problems = history_problems([recorded(3, "three", None)], FILES)
    assert problems == [
        "0003_three.sql was applied by a newer mailsync (this one's newest migration is 0002):"
        " run that version"
    ]


def test_regeneration_keeps_the_header_and_replaces_the_dump() -> None:
    header = "-- the state machine, drawn\n"
    text = render(header, "CREATE TABLE a ();\n")
    assert split(text) == ("-- the state machine, drawn\n\n", "CREATE TABLE a ();\n")
    assert split(render(split(text)[0], "CREATE TABLE b ();\n"))[1] == "CREATE TABLE b ();\n"
    assert MARKER in text and split("-- a header only\n") == ("-- a header only\n", "")


def test_the_dump_loses_its_noise_only() -> None:
    dump = (
        "\\restrict Xa1\n--\n-- PostgreSQL database dump\n--\n\n-- Dumped from database "
        "version 18.4\nSET statement_timeout = 0;\n"
        "SELECT pg_catalog.set_config('search_path', '', false);\n\n\n--\n-- Name: a; Type: "
        "TABLE; Schema: public; Owner: -\n--\n\nCREATE TABLE public.a (\n    x int -- why\n);"
        "\n\n\n\\unrestrict Xa1\n"
    )
    assert normalise(dump) == "CREATE TABLE public.a (\n    x int -- why\n);\n"
