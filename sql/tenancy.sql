-- Named queries of tenant isolation (mailsync/store/roles.py, mailsync/sync/jobs.py); the roles and
-- policies themselves are in migrations/0004_tenant_isolation.sql.

-- name: acting_role
-- Who this connection acts as now, its login, and whether that role ignores row-level
-- security (a superuser or a BYPASSRLS role).
SELECT current_user AS role, session_user AS login, r.rolsuper OR r.rolbypassrls AS bypasses_rls
  FROM pg_roles AS r
 WHERE r.rolname = current_user;

-- name: job_business
-- Whose job is this? The one cross-tenant lookup, made before the tenant is known (resume
-- or status by job id); NULL for an unknown job.
SELECT job_business_id(%(job_id)s) AS business_id;

-- name: set_tenant_of_job
-- The current transaction works as the job's business (the lookup above and the tenant's
-- SET LOCAL in one statement, sent with the statements after it); an unknown job leaves no
-- tenant, so nothing of any tenant is visible.
SELECT set_config('app.business_id', coalesce(job_business_id(%(job_id)s)::text, ''), true);
