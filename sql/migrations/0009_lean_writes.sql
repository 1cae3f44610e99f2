-- What a stored message costs Postgres, cut to what pays for itself (docs/benchmark.md,
-- "Postgres per message"; measured with `mailsync bench --store`).

-- 1. Bodies: pglz compressing each body into TOAST was ~37 µs of the ~90 µs of server
-- CPU that writing a message took. lz4 does the same job for a fraction of that and keeps
-- the disk saving, so a server built with it compresses with lz4. One without it (the
-- embedded server is one) stores bodies uncompressed and out of line (EXTERNAL): ~1.8x
-- the disk and ~1.6x the WAL per message, for ~39 µs less CPU; the main heap keeps
-- only the small columns, which is what the sync's own scans read. Values already stored
-- keep the form they have.
DO $$
BEGIN
    ALTER TABLE emails ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    ALTER TABLE emails ALTER COLUMN body SET STORAGE EXTERNAL;
END;
$$;

-- 2. Indexes that no query reads (sql/*.sql, the reports and cleanup included): every
-- message and every attachment paid for them on insert and in vacuum. What the queries
-- use stays: emails (store_id, graph_id) unique (the upsert, removals, orphaned
-- attachments), emails_store_folder_live (removal candidates, counts of live messages),
-- email_attachments' unique key (the upsert) and its primary key (the cleanup's keyset).
DROP INDEX emails_store_received;
DROP INDEX emails_internet_message_id;
DROP INDEX email_attachments_created;
