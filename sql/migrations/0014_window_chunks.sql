-- Window chunks, and dead SQL gone (issue 21).
--
-- 1. A chunk of kind 'full' was the keyset listing of one folder within a --from/--to
--    window, while a job of sync_type 'full' is a delta round from scratch: one word for
--    two different reads. The chunk kind is now 'window' (the sync type stays 'full').
--    No function body compares the kind with a literal (complete_chunk_job, 0010, matches
--    the finishing chunk's own kind), so none is restated.
-- 2. claim_next_chunk_job (0002) claimed "the next claimable chunk of a job"; since 0005
--    the flow claims a chunk by its index (claim_chunk) and nothing calls it.

-- Rows of every tenant are renamed: with row security on, a login bound by the policies
-- would see none of them and leave them behind for the new CHECK to refuse. Turned off,
-- such a login gets an error instead of a silent partial update.
SET LOCAL row_security = off;

ALTER TABLE chunked_sync_jobs DROP CONSTRAINT chunked_sync_jobs_kind_check;
UPDATE chunked_sync_jobs SET kind = 'window' WHERE kind = 'full';
ALTER TABLE chunked_sync_jobs
    ALTER COLUMN kind SET DEFAULT 'window',
    ADD CONSTRAINT chunked_sync_jobs_kind_check CHECK (kind IN ('window', 'delta'));

DROP FUNCTION claim_next_chunk_job(uuid, text);
