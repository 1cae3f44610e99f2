-- Tenant isolation: database roles, ownership, grants and row-level security.
--
-- The database itself keeps one business's rows away from another's: every table holding
-- tenant data has a policy "business_id = the transaction's tenant" (app.business_id, set by
-- Database.transaction) for reads and writes alike, FORCEd so that the tables' owner is bound
-- too. Superusers and BYPASSRLS roles are never bound, so the application acts through
-- these roles (see docs/security.md):
--
--   mailsync_owner        owns the tables, the view and the functions; no one acts as it
--   mailsync_worker       runs syncs: DML on its tenant's rows, the state-machine functions,
--                         TEMP for the staging table; no DDL (it owns nothing)
--   mailsync_reporting    reads its tenant's rows; writes nothing
--   mailsync_maintenance  BYPASSRLS: cleanup, recovery and all-tenant reports, which must see
--                         every tenant; only Database.maintenance_transaction() acts as it
--
-- Roles are cluster-wide: the first database upgraded creates them, later ones reuse them
-- (a DBA may create them beforehand; creating a BYPASSRLS role takes a superuser).
-- A later migration that adds a table holding tenant data must give it the same treatment:
-- owner, grants, ENABLE + FORCE ROW LEVEL SECURITY and a tenant_isolation policy
-- (tests/integration/test_tenancy.py checks every table with a business_id column).
-- Needs PostgreSQL 15 or later (security_invoker views).

DO $$
BEGIN
    -- One block per role: a role created meanwhile by a concurrent upgrade of another
    -- database of the cluster is not an error.
    BEGIN
        CREATE ROLE mailsync_owner NOLOGIN;
    EXCEPTION WHEN duplicate_object THEN NULL;
    END;
    BEGIN
        CREATE ROLE mailsync_worker NOLOGIN;
    EXCEPTION WHEN duplicate_object THEN NULL;
    END;
    BEGIN
        CREATE ROLE mailsync_reporting NOLOGIN;
    EXCEPTION WHEN duplicate_object THEN NULL;
    END;
    BEGIN
        CREATE ROLE mailsync_maintenance NOLOGIN BYPASSRLS;
    EXCEPTION WHEN duplicate_object THEN NULL;
    END;
END;
$$;

-- The tenant of the current transaction; NULL (no rows at all) when none is set. After a
-- transaction-local set_config the setting reads '' rather than NULL, hence the nullif.
CREATE FUNCTION current_business_id()
RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('app.business_id', true), '')::uuid;
$$;

-- Composite keys wherever a row names another row, so that no reference crosses tenants:
-- a checkpoint's chunk and a chunk's store were single-column references (or none).
ALTER TABLE chunked_sync_jobs ADD UNIQUE (id, business_id);
ALTER TABLE sync_state_checkpoints
    DROP CONSTRAINT sync_state_checkpoints_chunk_id_fkey,
    ADD FOREIGN KEY (chunk_id, business_id)
        REFERENCES chunked_sync_jobs (id, business_id) ON DELETE CASCADE,
    ADD FOREIGN KEY (store_id, business_id)
        REFERENCES stores (id, business_id) ON DELETE CASCADE;
ALTER TABLE chunked_sync_jobs
    ADD FOREIGN KEY (store_id, business_id) REFERENCES stores (id, business_id) ON DELETE CASCADE;

-- Row-level security: the same rule for reading and writing, for every role that does not
-- bypass it. An INSERT or UPDATE naming another business fails the WITH CHECK; another
-- business's rows are invisible to SELECT, UPDATE and DELETE.
ALTER TABLE stores ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON stores
    USING (business_id = current_business_id())
    WITH CHECK (business_id = current_business_id());

ALTER TABLE sync_queue ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sync_queue
    USING (business_id = current_business_id())
    WITH CHECK (business_id = current_business_id());

ALTER TABLE chunked_sync_jobs ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON chunked_sync_jobs
    USING (business_id = current_business_id())
    WITH CHECK (business_id = current_business_id());

ALTER TABLE sync_state_checkpoints ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sync_state_checkpoints
    USING (business_id = current_business_id())
    WITH CHECK (business_id = current_business_id());

ALTER TABLE emails ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON emails
    USING (business_id = current_business_id())
    WITH CHECK (business_id = current_business_id());

ALTER TABLE email_attachments ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON email_attachments
    USING (business_id = current_business_id())
    WITH CHECK (business_id = current_business_id());

-- The progress view reads its tables with the caller's rights (and so the caller's tenant),
-- not with its owner's. get_sync_job_progress and the state-machine functions of 0002 are
-- SECURITY INVOKER (the default) and so see and change the caller's tenant's rows only.
ALTER VIEW chunk_processing_status SET (security_invoker = true);

-- Whose job is this? `mailsync resume JOB`, `status JOB` and sync_mailbox(job_id=...) know
-- only a job id. This is the one question answered across tenants without the maintenance
-- role: one business id for one (random, unguessable) job id, nothing else. The caller then
-- works as that tenant, under the policies above.
CREATE FUNCTION job_business_id(p_job_id uuid)
RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT business_id FROM sync_queue WHERE id = p_job_id;
$$;

-- Ownership: the tables, the view and the functions belong to mailsync_owner. FORCE above
-- binds it too; the one exception is job_business_id, owned by the role that may look
-- across tenants (a SECURITY DEFINER function runs with its owner's rights).
ALTER TABLE stores OWNER TO mailsync_owner;
ALTER TABLE sync_queue OWNER TO mailsync_owner;
ALTER TABLE chunked_sync_jobs OWNER TO mailsync_owner;
ALTER TABLE sync_state_checkpoints OWNER TO mailsync_owner;
ALTER TABLE emails OWNER TO mailsync_owner;
ALTER TABLE email_attachments OWNER TO mailsync_owner;
ALTER VIEW chunk_processing_status OWNER TO mailsync_owner;
ALTER FUNCTION current_business_id() OWNER TO mailsync_owner;
ALTER FUNCTION claim_next_chunk_job(uuid, text) OWNER TO mailsync_owner;
ALTER FUNCTION heartbeat_chunk(uuid, text, integer) OWNER TO mailsync_owner;
ALTER FUNCTION complete_chunk_job(uuid, text, integer, integer, integer, integer, integer,
                                  boolean) OWNER TO mailsync_owner;
ALTER FUNCTION fail_chunk_job(uuid, text, integer, text, text, boolean, double precision,
                              integer, integer) OWNER TO mailsync_owner;
ALTER FUNCTION cleanup_stuck_chunks(interval, uuid) OWNER TO mailsync_owner;
ALTER FUNCTION finish_sync_job(uuid) OWNER TO mailsync_owner;
ALTER FUNCTION get_sync_job_progress(uuid) OWNER TO mailsync_owner;
ALTER FUNCTION job_business_id(uuid) OWNER TO mailsync_maintenance;

-- Grants: nothing for PUBLIC, then what each role needs.
REVOKE ALL ON stores, sync_queue, chunked_sync_jobs, sync_state_checkpoints, emails,
              email_attachments, chunk_processing_status FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION
    claim_next_chunk_job(uuid, text),
    heartbeat_chunk(uuid, text, integer),
    complete_chunk_job(uuid, text, integer, integer, integer, integer, integer, boolean),
    fail_chunk_job(uuid, text, integer, text, text, boolean, double precision, integer, integer),
    cleanup_stuck_chunks(interval, uuid),
    finish_sync_job(uuid),
    get_sync_job_progress(uuid),
    job_business_id(uuid)
FROM PUBLIC;
-- current_business_id() keeps PUBLIC's EXECUTE: every policy check calls it as the caller.

-- The worker writes what a sync writes. It deletes only mail (an incremental sync removes
-- what Graph reports @removed); removing stores, jobs and checkpoints is maintenance's.
GRANT SELECT, INSERT, UPDATE ON stores, sync_queue, chunked_sync_jobs, sync_state_checkpoints,
                                emails, email_attachments TO mailsync_worker;
GRANT DELETE ON emails, email_attachments TO mailsync_worker;
GRANT SELECT ON chunk_processing_status TO mailsync_worker;
GRANT EXECUTE ON FUNCTION
    claim_next_chunk_job(uuid, text),
    heartbeat_chunk(uuid, text, integer),
    complete_chunk_job(uuid, text, integer, integer, integer, integer, integer, boolean),
    fail_chunk_job(uuid, text, integer, text, text, boolean, double precision, integer, integer),
    cleanup_stuck_chunks(interval, uuid),  -- a resumed sync takes back its own job's chunks
    finish_sync_job(uuid),
    get_sync_job_progress(uuid),
    job_business_id(uuid)
TO mailsync_worker;

GRANT SELECT ON stores, sync_queue, chunked_sync_jobs, sync_state_checkpoints, emails,
                email_attachments, chunk_processing_status TO mailsync_reporting;
GRANT EXECUTE ON FUNCTION get_sync_job_progress(uuid) TO mailsync_reporting;

-- Maintenance repairs and removes across tenants (recovery, retention, orphans); it never
-- creates tenant rows.
GRANT SELECT, UPDATE, DELETE ON stores, sync_queue, chunked_sync_jobs, sync_state_checkpoints,
                                emails, email_attachments TO mailsync_maintenance;
GRANT SELECT ON chunk_processing_status TO mailsync_maintenance;
GRANT EXECUTE ON FUNCTION
    cleanup_stuck_chunks(interval, uuid),
    finish_sync_job(uuid),
    get_sync_job_progress(uuid)
TO mailsync_maintenance;

-- Every mailsync process checks that the schema is up to date (mailsync.migrate) before it
-- works: the applied versions are readable by all mailsync roles.
GRANT SELECT ON schema_migrations TO mailsync_worker, mailsync_reporting, mailsync_maintenance;

-- Database- and schema-level rights, and the definer function's search path, name the
-- database and schema this migration runs in (identifiers quoted by format's %I).
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO mailsync_worker',
                   current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO mailsync_reporting, mailsync_maintenance',
                   current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO mailsync_owner, mailsync_worker, '
                   'mailsync_reporting, mailsync_maintenance', current_schema());
    -- A SECURITY DEFINER function must not resolve names through a schema (or pg_temp)
    -- its caller controls.
    EXECUTE format('ALTER FUNCTION job_business_id(uuid) SET search_path = pg_catalog, %I, '
                   'pg_temp', current_schema());
END;
$$;
