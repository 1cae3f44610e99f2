-- Named queries of the migrator (mailsync.store.migrate): the bookkeeping around the numbered
-- files in migrations/, which hold the schema itself.

-- name: migrations_bookkeeping
-- Whether any migration has been recorded yet, and whether the record has checksums (a
-- database upgraded before they existed has not). Read-only: a least-privilege login may ask.
SELECT to_regclass('schema_migrations') IS NOT NULL AS present,
       EXISTS (SELECT 1 FROM pg_attribute
                WHERE attrelid = to_regclass('schema_migrations')
                  AND attname = 'sha256' AND NOT attisdropped) AS has_sha256;

-- name: create_migrations_table
-- The record of applied migrations, created on first upgrade. sha256 is the file's digest
-- when it was applied: a file edited since no longer matches (NULL only until the migrator
-- adopts the digests of a record older than the column).
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    sha256     text        CHECK (sha256 ~ '^[0-9a-f]{64}$')
);

-- name: add_migration_checksums
-- A record made before checksums existed gains the column; its rows are adopted next.
ALTER TABLE schema_migrations
    ADD COLUMN IF NOT EXISTS sha256 text CHECK (sha256 ~ '^[0-9a-f]{64}$');

-- name: applied_migrations
-- The migrations applied so far, with the digest each file had then.
SELECT version, name, sha256 FROM schema_migrations ORDER BY version;

-- name: record_migration
-- One migration applied (in the same transaction as its body).
INSERT INTO schema_migrations (version, name, sha256) VALUES (%(version)s, %(name)s, %(sha256)s);

-- name: adopt_migration_checksum
-- A migration applied before checksums existed: its file as it is now is taken as the one
-- applied (nothing can tell otherwise), once.
UPDATE schema_migrations SET sha256 = %(sha256)s WHERE version = %(version)s AND sha256 IS NULL;

-- name: lock_migrations
-- Two processes upgrading at once: the second waits here, then finds nothing left to do.
-- The key is an arbitrary constant shared by every mailsync process.
SELECT pg_advisory_lock(7420001);

-- name: unlock_migrations
-- Release the upgrade lock.
SELECT pg_advisory_unlock(7420001);
