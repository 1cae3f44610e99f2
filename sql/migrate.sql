-- Named queries of the migrator (mailsync.store.migrate): the bookkeeping around the numbered
-- files in migrations/, which hold the schema itself.

-- name: migrations_table_exists
-- Whether any migration has been recorded yet (read-only: a least-privilege login may ask).
SELECT to_regclass('schema_migrations') IS NOT NULL AS present;

-- name: create_migrations_table
-- The record of applied migrations, created on first upgrade.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
-- The versions applied so far.
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
-- One migration applied (in the same transaction as its body).
INSERT INTO schema_migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: lock_migrations
-- Two processes upgrading at once: the second waits here, then finds nothing left to do.
-- The key is an arbitrary constant shared by every mailsync process.
SELECT pg_advisory_lock(7420001);

-- name: unlock_migrations
-- Release the upgrade lock.
SELECT pg_advisory_unlock(7420001);
