-- The mailsync schema as the migrations in sql/migrations/ leave it, dumped from a freshly
-- migrated database. Read it to see what a table or a function is now; change the schema
-- only with a new migration (never edit an applied one: docs/migrations.md), then run
--     python -m mailsync.store.schema --write
-- which keeps this header and replaces everything below the marker line.
-- tests/integration/test_schema.py fails when the two disagree.
-- Not shown: owners and grants (0004; docs/security.md, tests/integration/test_tenancy.py),
-- and how emails.body is stored (0009: lz4 where the server has it, else EXTERNAL).
--
-- THE CHUNK STATE MACHINE (chunked_sync_jobs.status), one function per transition:
--
--                      release, take back
--            ┌───────────────────────────────────┐
--            ▼                                   │      ┌───┐ renew
--  plan ──► pending ──────────claim──────────► processing ◄─┘
--            │                  ▲         fail │  │  │
--            │ skip             │  (retryable) │  │  └──complete────────────────► completed
--            ▼                  │              │  └──fail, take back (spent)──► failed
--        completed              │ claim (due)  ▼
--                               └────────── retrying ──skip──► completed
--
--   pending     claim      claim_chunk: every earlier chunk completed or failed, and due
--   retrying    claim      (next_attempt_at passed); attempts + 1, worker_id, heartbeat_at
--   processing  renew      heartbeat_chunk; record_chunk_page (a page committed: progress,
--                          checkpoint_data, heartbeat_at)
--   processing  complete   complete_chunk_job → completed
--   processing  fail       fail_chunk_job → retrying when retryable and attempts are left
--                          (next_attempt_at: Retry-After or backoff), else → failed
--   processing  release    release_chunk_job → pending: the worker was told to stop
--                          (SIGTERM, Ctrl-C, a cancelled run); the attempt is not counted
--   processing  take back  take_back_chunk → pending, or failed ('stuck') when attempts are
--                          spent: the lease lapsed (cleanup_stuck_chunks; claim_chunk's first
--                          step), or claim_chunk is asked by the holder itself
--   pending,    skip       complete_chunk_job of an earlier chunk of the same folder and kind
--   retrying               that exhausted its folder → completed, empty (checkpoint_data
--                          'skipped')
--
-- Every transition out of processing but take back is fenced on (worker_id, attempts): a
-- worker whose claim was taken back or released changes nothing more (complete, fail and
-- release answer false or NULL; record_chunk_page raises SQLSTATE MSL01: LeaseLostError).
-- claim_chunk says why it claimed nothing: finished, not_due, busy (a live holder) or
-- blocked (an earlier chunk is open). kind: 'delta' (a delta round, or a part of one) or
-- 'window' (a --from/--to window's keyset listing).
-- The job (sync_queue.status): pending → running (start_sync_job) → completed or
-- partial_failure (finish_sync_job, once every chunk is completed or failed), or → failed
-- (fail_sync_job: the job cannot go on at all).

-- ==== Below: pg_dump of a migrated database. Regenerate: python -m mailsync.store.schema --write ====
CREATE FUNCTION public.acquire_graph_slot(p_limits jsonb, p_lease_s double precision) RETURNS TABLE(lease_id uuid, wait_s double precision, reason text)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_epoch double precision;
    v_lease uuid := gen_random_uuid();
    v_keys text[];
    v_wait double precision := -1;
    v_reason text;
    v record;
    v_in_flight integer;
    v_used bigint;
    v_oldest bigint;
    v_this double precision;
BEGIN
    v_epoch := extract(epoch FROM v_now);
    INSERT INTO graph_limits AS g (key, max_in_flight, budget, span_s, slice_s)
    SELECT x.key, x.max_in_flight, x.budget, x.span_s, x.slice_s
      FROM jsonb_to_recordset(p_limits)
           AS x(key text, max_in_flight integer, budget integer, span_s double precision,
                slice_s double precision)
     ORDER BY x.key
    ON CONFLICT (key) DO UPDATE
       SET max_in_flight = EXCLUDED.max_in_flight, budget = EXCLUDED.budget,
           span_s = EXCLUDED.span_s, slice_s = EXCLUDED.slice_s
     WHERE (g.max_in_flight, g.budget, g.span_s, g.slice_s)
           IS DISTINCT FROM (EXCLUDED.max_in_flight, EXCLUDED.budget, EXCLUDED.span_s,
                             EXCLUDED.slice_s);
    SELECT array_agg(x.key ORDER BY x.key) INTO v_keys
      FROM jsonb_to_recordset(p_limits) AS x(key text);
    FOR v IN SELECT g.*,
                    least(g.max_in_flight, greatest(1, coalesce(x.slots, 1))) AS want_slots,
                    least(g.budget, greatest(1, coalesce(x.tokens, 1))) AS want_tokens
               FROM graph_limits AS g
               JOIN jsonb_to_recordset(p_limits) AS x(key text, slots integer, tokens integer)
                 ON x.key = g.key
              ORDER BY g.key
                FOR UPDATE OF g LOOP
        DELETE FROM graph_leases AS l WHERE l.key = v.key AND l.expires_at < v_now;
        DELETE FROM graph_window AS w
         WHERE w.key = v.key AND w.slice < floor((v_epoch - v.span_s) / v.slice_s)::bigint;
        SELECT coalesce(sum(w.requests), 0), min(w.slice) INTO v_used, v_oldest
          FROM graph_window AS w WHERE w.key = v.key;
        SELECT coalesce(sum(l.slots), 0) INTO v_in_flight FROM graph_leases AS l
         WHERE l.key = v.key;
        v_this := -1;
        IF v.paused_until > v_now THEN
            v_this := extract(epoch FROM v.paused_until - v_now);
            v_reason := coalesce(v_reason, 'paused: ' || v.key);
        ELSIF v_in_flight + v.want_slots > v.max_in_flight THEN
            v_this := 0;
            v_reason := coalesce(v_reason, 'in flight: ' || v.key);
        ELSIF v_used + v.want_tokens > v.budget THEN
            -- The oldest slice leaves once floor((now - span_s) / slice_s) passes it.
            v_this := greatest(0.001, (v_oldest + 1) * v.slice_s + v.span_s - v_epoch);
            v_reason := coalesce(v_reason, 'budget: ' || v.key);
        END IF;
        v_wait := greatest(v_wait, v_this);
    END LOOP;
    IF v_wait >= 0 THEN
        UPDATE graph_limits AS g SET waits = g.waits + 1 WHERE g.key = ANY (v_keys);
        RETURN QUERY SELECT NULL::uuid, v_wait, v_reason;
        RETURN;
    END IF;
    UPDATE graph_limits AS g SET requests = g.requests + greatest(1, coalesce(x.tokens, 1))
      FROM jsonb_to_recordset(p_limits) AS x(key text, tokens integer)
     WHERE g.key = x.key;
    INSERT INTO graph_window AS w (key, slice, requests)
    SELECT g.key, floor(v_epoch / g.slice_s)::bigint, greatest(1, coalesce(x.tokens, 1))
      FROM graph_limits AS g
      JOIN jsonb_to_recordset(p_limits) AS x(key text, tokens integer) ON x.key = g.key
    ON CONFLICT (key, slice) DO UPDATE SET requests = w.requests + EXCLUDED.requests;
    INSERT INTO graph_leases (lease_id, key, expires_at, slots)
    SELECT v_lease, g.key, v_now + make_interval(secs => p_lease_s),
           least(g.max_in_flight, greatest(1, coalesce(x.slots, 1)))
      FROM graph_limits AS g
      JOIN jsonb_to_recordset(p_limits) AS x(key text, slots integer) ON x.key = g.key;
    RETURN QUERY SELECT v_lease, 0::double precision, NULL::text;
END;
$$;

CREATE FUNCTION public.apply_email_removals(p_job_id uuid) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_deleted integer;
    v_store_id uuid;
BEGIN
    SELECT store_id INTO v_store_id FROM sync_queue WHERE id = p_job_id;
    WITH read_to_end AS (
        SELECT DISTINCT ON (c.folder_id) c.folder_id,
               c.exhausted OR coalesce((c.cursor ->> 'catch_up')::boolean, false) AS ended
          FROM sync_state_checkpoints AS c
         WHERE c.sync_job_id = p_job_id
         ORDER BY c.folder_id, c.id DESC),
    marked AS (
        UPDATE emails AS e
           SET deleted_at = now(), last_synced_at = now()
          FROM email_removals AS r
         WHERE r.job_id = p_job_id AND NOT r.applied
           -- Each candidate's row is found by its unique key (store_id, graph_id). Joined
           -- on r.store_id and with parent_folder_id = folder_id, the planner took the
           -- live-rows index instead and filtered the folder's, or the store's, every
           -- message for each candidate: 0.55 s and 3.8 s for 125 candidates in a
           -- 50,000-message mailbox, against 7 ms. The job's one store as a value, and
           -- IS NOT DISTINCT FROM (the same here: folder_id is never NULL), leave it no
           -- index condition but the unique key's.
           AND e.store_id = v_store_id AND r.store_id = v_store_id AND e.graph_id = r.graph_id
           AND e.parent_folder_id IS NOT DISTINCT FROM r.folder_id AND e.deleted_at IS NULL
           AND (EXISTS (SELECT 1 FROM read_to_end AS f
                         WHERE f.folder_id = r.folder_id AND f.ended)
                OR EXISTS (SELECT 1 FROM mail_folders AS f
                            WHERE f.store_id = r.store_id AND f.graph_id = r.folder_id
                              AND f.deleted_at IS NOT NULL))
        RETURNING e.graph_id, e.parent_folder_id)
    UPDATE email_removals AS r
       SET deleted = EXISTS (SELECT 1 FROM marked AS m
                              WHERE m.graph_id = r.graph_id AND m.parent_folder_id = r.folder_id)
     WHERE r.job_id = p_job_id AND NOT r.applied;
    UPDATE email_removals SET applied = true WHERE job_id = p_job_id AND NOT applied;
    SELECT count(*) INTO v_deleted FROM email_removals WHERE job_id = p_job_id AND deleted;
    RETURN v_deleted;
END;
$$;

CREATE TABLE public.chunked_sync_jobs (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    parent_sync_job_id uuid NOT NULL,
    business_id uuid NOT NULL,
    store_id uuid NOT NULL,
    chunk_index integer NOT NULL,
    total_chunks integer NOT NULL,
    chunk_size integer NOT NULL,
    estimated_emails integer NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    max_attempts integer DEFAULT 3 NOT NULL,
    worker_id text,
    heartbeat_at timestamp with time zone,
    next_attempt_at timestamp with time zone,
    started_at timestamp with time zone,
    completed_at timestamp with time zone,
    emails_processed integer DEFAULT 0 NOT NULL,
    emails_failed integer DEFAULT 0 NOT NULL,
    api_calls_made integer DEFAULT 0 NOT NULL,
    processing_time_ms integer DEFAULT 0 NOT NULL,
    error_message text,
    error_category text,
    checkpoint_data jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    kind text DEFAULT 'window'::text NOT NULL,
    folder_id text,
    last_in_folder boolean DEFAULT false NOT NULL,
    emails_added integer DEFAULT 0 NOT NULL,
    emails_updated integer DEFAULT 0 NOT NULL,
    delta_resets integer DEFAULT 0 NOT NULL,
    CONSTRAINT chunked_sync_jobs_check CHECK ((chunk_index <= total_chunks)),
    CONSTRAINT chunked_sync_jobs_check1 CHECK ((attempts <= max_attempts)),
    CONSTRAINT chunked_sync_jobs_check2 CHECK (((status <> 'processing'::text) OR ((worker_id IS NOT NULL) AND (heartbeat_at IS NOT NULL)))),
    CONSTRAINT chunked_sync_jobs_chunk_index_check CHECK ((chunk_index >= 1)),
    CONSTRAINT chunked_sync_jobs_chunk_size_check CHECK ((chunk_size > 0)),
    CONSTRAINT chunked_sync_jobs_estimated_emails_check CHECK ((estimated_emails >= 0)),
    CONSTRAINT chunked_sync_jobs_kind_check CHECK ((kind = ANY (ARRAY['window'::text, 'delta'::text]))),
    CONSTRAINT chunked_sync_jobs_max_attempts_check CHECK ((max_attempts >= 1)),
    CONSTRAINT chunked_sync_jobs_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'processing'::text, 'retrying'::text, 'completed'::text, 'failed'::text]))),
    CONSTRAINT chunked_sync_jobs_total_chunks_check CHECK ((total_chunks >= 1))
);

ALTER TABLE ONLY public.chunked_sync_jobs FORCE ROW LEVEL SECURITY;

CREATE FUNCTION public.claim_chunk(p_job_id uuid, p_chunk_index integer, p_worker_id text, p_stuck_after interval) RETURNS TABLE(outcome text, wait_s double precision, chunk public.chunked_sync_jobs)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v chunked_sync_jobs;
BEGIN
    SELECT * INTO v
      FROM chunked_sync_jobs AS c
     WHERE c.parent_sync_job_id = p_job_id AND c.chunk_index = p_chunk_index
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    IF v.status = 'processing'
       AND (v.heartbeat_at < now() - p_stuck_after OR v.worker_id = p_worker_id) THEN
        v := take_back_chunk(v.id);
    END IF;

    IF v.status IN ('completed', 'failed') THEN
        RETURN QUERY SELECT 'finished'::text, 0::float8, v;
    ELSIF v.status = 'processing' THEN
        RETURN QUERY SELECT 'busy'::text,
            greatest(0, extract(epoch FROM v.heartbeat_at + p_stuck_after - now()))::float8, v;
    ELSIF EXISTS (SELECT 1
                    FROM chunked_sync_jobs AS e
                   WHERE e.parent_sync_job_id = p_job_id
                     AND e.chunk_index < p_chunk_index
                     AND e.status NOT IN ('completed', 'failed')) THEN
        RETURN QUERY SELECT 'blocked'::text, 0::float8, v;
    ELSIF v.next_attempt_at > now() THEN
        RETURN QUERY SELECT 'not_due'::text,
            extract(epoch FROM v.next_attempt_at - now())::float8, v;
    ELSE
        UPDATE chunked_sync_jobs AS c
           SET status = 'processing',
               attempts = c.attempts + 1,
               worker_id = p_worker_id,
               heartbeat_at = now(),
               next_attempt_at = NULL,
               started_at = coalesce(c.started_at, now()),
               updated_at = now()
         WHERE c.id = v.id
        RETURNING * INTO v;
        RETURN QUERY SELECT 'claimed'::text, 0::float8, v;
    END IF;
END;
$$;

CREATE FUNCTION public.cleanup_stuck_chunks(p_stuck_after interval, p_job_id uuid DEFAULT NULL::uuid) RETURNS TABLE(chunk_id uuid, parent_sync_job_id uuid, new_status text)
    LANGUAGE sql
    AS $$
    SELECT taken.id, taken.parent_sync_job_id, taken.status
      FROM (SELECT id
              FROM chunked_sync_jobs
             WHERE status = 'processing' AND heartbeat_at < now() - p_stuck_after
               AND (p_job_id IS NULL OR parent_sync_job_id = p_job_id)
               FOR UPDATE SKIP LOCKED) AS stuck
     CROSS JOIN LATERAL take_back_chunk(stuck.id) AS taken;
$$;

CREATE FUNCTION public.complete_chunk_job(p_chunk_id uuid, p_worker_id text, p_attempt integer, p_emails_processed integer, p_emails_failed integer, p_api_calls integer, p_processing_time_ms integer, p_exhausted boolean) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_chunk chunked_sync_jobs;
BEGIN
    UPDATE chunked_sync_jobs
       SET status = 'completed',
           completed_at = now(),
           emails_processed = p_emails_processed,
           emails_failed = p_emails_failed,
           api_calls_made = api_calls_made + p_api_calls,
           processing_time_ms = processing_time_ms + p_processing_time_ms,
           error_message = NULL,
           error_category = NULL,
           updated_at = now()
     WHERE id = p_chunk_id AND status = 'processing'
       AND worker_id = p_worker_id AND attempts = p_attempt
    RETURNING * INTO v_chunk;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_exhausted THEN
        UPDATE chunked_sync_jobs
           SET status = 'completed', completed_at = now(), updated_at = now(),
               checkpoint_data = checkpoint_data
                   || jsonb_build_object('skipped', 'folder exhausted by chunk '
                                                     || v_chunk.chunk_index)
         WHERE parent_sync_job_id = v_chunk.parent_sync_job_id
           AND chunk_index > v_chunk.chunk_index
           AND kind = v_chunk.kind
           AND folder_id IS NOT DISTINCT FROM v_chunk.folder_id
           AND status IN ('pending', 'retrying');
    END IF;
    RETURN true;
END;
$$;

CREATE FUNCTION public.current_business_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT nullif(current_setting('app.business_id', true), '')::uuid;
$$;

CREATE FUNCTION public.expired_sync_jobs(p_completed_after interval, p_failed_after interval) RETURNS TABLE(id uuid)
    LANGUAGE sql STABLE
    AS $$
    SELECT q.id
      FROM sync_queue AS q
     WHERE (q.status = 'completed' AND q.completed_at < now() - p_completed_after)
        OR (q.status IN ('failed', 'partial_failure') AND q.completed_at < now() - p_failed_after);
$$;

CREATE FUNCTION public.fail_chunk_job(p_chunk_id uuid, p_worker_id text, p_attempt integer, p_error_message text, p_error_category text, p_retryable boolean, p_retry_delay_s double precision, p_api_calls integer, p_processing_time_ms integer) RETURNS text
    LANGUAGE sql
    AS $$
    UPDATE chunked_sync_jobs
       SET status = CASE WHEN p_retryable AND attempts < max_attempts
                         THEN 'retrying' ELSE 'failed' END,
           next_attempt_at = CASE WHEN p_retryable AND attempts < max_attempts
                                  THEN now() + make_interval(secs => p_retry_delay_s) END,
           completed_at = CASE WHEN p_retryable AND attempts < max_attempts
                               THEN NULL ELSE now() END,
           error_message = left(p_error_message, 2000),
           error_category = p_error_category,
           api_calls_made = api_calls_made + p_api_calls,
           processing_time_ms = processing_time_ms + p_processing_time_ms,
           worker_id = NULL,
           heartbeat_at = NULL,
           updated_at = now()
     WHERE id = p_chunk_id AND status = 'processing'
       AND worker_id = p_worker_id AND attempts = p_attempt
    RETURNING status;
$$;

CREATE FUNCTION public.finish_sync_job(p_job_id uuid) RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_open integer;
    v_deleted integer;
    v_status text;
BEGIN
    SELECT count(*) INTO v_open FROM chunked_sync_jobs
     WHERE parent_sync_job_id = p_job_id AND status NOT IN ('completed', 'failed');
    IF v_open > 0 THEN
        SELECT status INTO v_status FROM sync_queue WHERE id = p_job_id;
        RETURN v_status;
    END IF;
    PERFORM 1 FROM sync_queue WHERE id = p_job_id AND status IN ('pending', 'running') FOR UPDATE;
    IF NOT FOUND THEN
        SELECT status INTO v_status FROM sync_queue WHERE id = p_job_id;
        RETURN v_status;
    END IF;
    v_deleted := apply_email_removals(p_job_id);
    WITH totals AS (
        SELECT count(*) FILTER (WHERE status = 'failed') AS failed_chunks,
               coalesce(sum(emails_processed), 0) AS processed,
               coalesce(sum(emails_failed), 0) AS failed,
               coalesce(sum(api_calls_made), 0) AS api_calls,
               coalesce(sum(emails_added), 0) AS added,
               coalesce(sum(emails_updated), 0) AS updated,
               coalesce(sum(delta_resets), 0) AS resets,
               count(*) FILTER (WHERE (checkpoint_data ->> 'fallback') IS NOT NULL) AS fallbacks,
               (array_agg(error_message ORDER BY chunk_index)
                   FILTER (WHERE status = 'failed'))[1] AS first_error,
               (array_agg(error_category ORDER BY chunk_index)
                   FILTER (WHERE status = 'failed'))[1] AS first_category
          FROM chunked_sync_jobs
         WHERE parent_sync_job_id = p_job_id)
    UPDATE sync_queue AS q
       SET status = CASE WHEN t.failed_chunks = 0 THEN 'completed' ELSE 'partial_failure' END,
           emails_processed = t.processed,
           emails_failed = t.failed,
           emails_added = t.added,
           emails_updated = t.updated,
           emails_deleted = v_deleted,
           delta_resets = t.resets,
           delta_fallbacks = t.fallbacks,
           api_calls_made = q.api_calls_made + t.api_calls,
           error_message = t.first_error,
           error_category = t.first_category,
           completed_at = now(),
           updated_at = now()
      FROM totals AS t
     WHERE q.id = p_job_id
    RETURNING q.status INTO v_status;
    RETURN v_status;
END;
$$;

CREATE FUNCTION public.get_sync_job_progress(p_job_id uuid) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT to_jsonb(s) FROM chunk_processing_status AS s WHERE s.parent_sync_job_id = p_job_id;
$$;

CREATE FUNCTION public.heartbeat_chunk(p_chunk_id uuid, p_worker_id text, p_attempt integer) RETURNS boolean
    LANGUAGE sql
    AS $$
    WITH renewed AS (
        UPDATE chunked_sync_jobs
           SET heartbeat_at = now()
         WHERE id = p_chunk_id AND status = 'processing'
           AND worker_id = p_worker_id AND attempts = p_attempt
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM renewed);
$$;

CREATE FUNCTION public.job_business_id(p_job_id uuid) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
    SELECT business_id FROM sync_queue WHERE id = p_job_id;
$$;

CREATE FUNCTION public.notification_pending_businesses() RETURNS TABLE(business_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public'
    AS $$
    SELECT DISTINCT o.business_id FROM notification_outbox AS o WHERE o.relayed_at IS NULL;
$$;

CREATE FUNCTION public.notification_record_missed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_previous_start timestamptz;
BEGIN
    IF NEW.status <> 'completed' OR OLD.status NOT IN ('pending', 'running')
       OR NEW.emails_processed = 0 THEN
        RETURN NULL;
    END IF;
    SELECT max(q.started_at) INTO v_previous_start
      FROM sync_queue AS q
     WHERE q.store_id = NEW.store_id AND q.id <> NEW.id AND q.started_at < NEW.started_at;
    IF v_previous_start IS NULL THEN
        RETURN NULL;  -- the first sync: everything is new, nothing was to be announced
    END IF;
    IF EXISTS (SELECT 1 FROM graph_subscriptions AS g
                WHERE g.store_id = NEW.store_id AND g.created_at < v_previous_start)
       AND NOT EXISTS (SELECT 1 FROM notification_outbox AS o
                        WHERE o.store_id = NEW.store_id
                          AND o.received_at > v_previous_start
                          AND o.received_at <= coalesce(NEW.completed_at, now())) THEN
        UPDATE stores SET missed_changes = missed_changes + 1 WHERE id = NEW.store_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION public.notification_subscriptions(p_ids text[]) RETURNS TABLE(id text, business_id uuid, store_id uuid, client_state_sha256 bytea)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public'
    AS $$
    SELECT g.id, g.business_id, g.store_id, g.client_state_sha256
      FROM graph_subscriptions AS g
     WHERE g.id = ANY (p_ids);
$$;

CREATE FUNCTION public.record_chunk_page(p_chunk_id uuid, p_worker_id text, p_attempt integer, p_checkpoint_data jsonb, p_emails_processed integer, p_emails_failed integer, p_emails_added integer, p_emails_updated integer, p_delta_resets integer) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE chunked_sync_jobs
       SET checkpoint_data = p_checkpoint_data, emails_processed = p_emails_processed,
           emails_failed = p_emails_failed, emails_added = p_emails_added,
           emails_updated = p_emails_updated, delta_resets = p_delta_resets,
           heartbeat_at = now(), updated_at = now()
     WHERE id = p_chunk_id AND status = 'processing'
       AND worker_id = p_worker_id AND attempts = p_attempt;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'chunk % is no longer held by worker % in attempt %',
                        p_chunk_id, p_worker_id, p_attempt
              USING ERRCODE = 'MSL01';
    END IF;
END;
$$;

CREATE FUNCTION public.registry_backoff_after() RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT 3 $$;

CREATE TABLE public.stores (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    business_id uuid NOT NULL,
    name text NOT NULL,
    mailbox text NOT NULL,
    folder text DEFAULT 'all'::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    registered_at timestamp with time zone,
    enabled boolean DEFAULT true NOT NULL,
    interval_minutes integer DEFAULT 60 NOT NULL,
    next_due_at timestamp with time zone,
    last_claimed_at timestamp with time zone,
    last_job_id uuid,
    last_status text,
    last_finished_at timestamp with time zone,
    last_success_at timestamp with time zone,
    consecutive_failures integer DEFAULT 0 NOT NULL,
    last_error text,
    folders_delta_link text,
    missed_changes integer DEFAULT 0 NOT NULL,
    last_notified_at timestamp with time zone,
    CONSTRAINT stores_interval_minutes_check CHECK (((interval_minutes >= 1) AND (interval_minutes <= 10080)))
);

ALTER TABLE ONLY public.stores FORCE ROW LEVEL SECURITY;

COMMENT ON COLUMN public.stores.folder IS 'the folder selection a sync uses when none is given';

COMMENT ON COLUMN public.stores.folders_delta_link IS 'where the next mailFolders/delta round starts; NULL: read the folder tree whole';

CREATE FUNCTION public.registry_health(p_store public.stores) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT CASE
        WHEN NOT p_store.enabled THEN 'paused'
        WHEN p_store.consecutive_failures >= registry_backoff_after() THEN 'backing_off'
        WHEN p_store.consecutive_failures > 0 THEN 'failing'
        WHEN p_store.last_success_at IS NULL THEN 'new'
        ELSE 'ok'
    END;
$$;

CREATE FUNCTION public.registry_record_job() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE stores
           SET last_job_id = NEW.id, last_status = NEW.status
         WHERE id = NEW.store_id;
    ELSIF NEW.status IN ('completed', 'partial_failure', 'failed')
          AND OLD.status IN ('pending', 'running') THEN
        UPDATE stores AS s
           SET last_job_id = NEW.id,
               last_status = NEW.status,
               last_finished_at = coalesce(NEW.completed_at, now()),
               last_success_at = CASE WHEN NEW.status = 'completed'
                                      THEN coalesce(NEW.completed_at, now())
                                      ELSE s.last_success_at END,
               consecutive_failures = CASE WHEN NEW.status = 'completed' THEN 0
                                           ELSE s.consecutive_failures + 1 END,
               last_error = CASE WHEN NEW.status = 'completed' THEN NULL
                                 ELSE left(coalesce(NEW.error_category || ': ', '')
                                           || coalesce(NEW.error_message, NEW.status), 500) END,
               next_due_at = CASE
                   WHEN NEW.status = 'completed' OR s.registered_at IS NULL THEN s.next_due_at
                   ELSE greatest(s.next_due_at,
                                 now() + registry_wait(s.interval_minutes,
                                                       s.consecutive_failures + 1)) END
         WHERE s.id = NEW.store_id;
    ELSIF NEW.status = 'running' THEN
        UPDATE stores SET last_job_id = NEW.id, last_status = NEW.status
         WHERE id = NEW.store_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION public.registry_wait(p_interval_minutes integer, p_failures integer) RETURNS interval
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT make_interval(mins => CASE
        WHEN p_failures < registry_backoff_after() THEN p_interval_minutes
        ELSE greatest(p_interval_minutes, least(
            p_interval_minutes * power(2, least(p_failures - registry_backoff_after() + 1, 20)),
            1440))::integer
    END);
$$;

CREATE FUNCTION public.release_chunk_job(p_chunk_id uuid, p_worker_id text, p_attempt integer, p_reason text, p_api_calls integer, p_processing_time_ms integer) RETURNS boolean
    LANGUAGE sql
    AS $$
    WITH released AS (
        UPDATE chunked_sync_jobs
           SET status = 'pending',
               attempts = attempts - 1,
               worker_id = NULL,
               heartbeat_at = NULL,
               next_attempt_at = NULL,
               error_category = 'cancelled',
               error_message = left(p_reason, 2000),
               api_calls_made = api_calls_made + p_api_calls,
               processing_time_ms = processing_time_ms + p_processing_time_ms,
               updated_at = now()
         WHERE id = p_chunk_id AND status = 'processing'
           AND worker_id = p_worker_id AND attempts = p_attempt
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM released);
$$;

CREATE FUNCTION public.take_back_chunk(p_chunk_id uuid) RETURNS public.chunked_sync_jobs
    LANGUAGE sql
    AS $$
    UPDATE chunked_sync_jobs AS c
       SET status = CASE WHEN c.attempts >= c.max_attempts THEN 'failed' ELSE 'pending' END,
           completed_at = CASE WHEN c.attempts >= c.max_attempts THEN now() END,
           error_category = 'stuck',
           error_message = format('worker %s stopped renewing its lease (last heartbeat %s)',
                                  c.worker_id, c.heartbeat_at),
           worker_id = NULL,
           heartbeat_at = NULL,
           updated_at = now()
     WHERE c.id = p_chunk_id
    RETURNING c.*;
$$;

CREATE TABLE public.attachment_blobs (
    business_id uuid NOT NULL,
    sha256 text NOT NULL,
    size_bytes bigint NOT NULL,
    content bytea NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    last_referenced_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT attachment_blobs_sha256_check CHECK ((sha256 ~ '^[0-9a-f]{64}$'::text)),
    CONSTRAINT attachment_blobs_size_bytes_check CHECK ((size_bytes >= 0))
);
ALTER TABLE ONLY public.attachment_blobs ALTER COLUMN content SET STORAGE EXTERNAL;

ALTER TABLE ONLY public.attachment_blobs FORCE ROW LEVEL SECURITY;

CREATE TABLE public.email_attachments (
    id bigint NOT NULL,
    business_id uuid NOT NULL,
    store_id uuid NOT NULL,
    email_graph_id text NOT NULL,
    graph_attachment_id text NOT NULL,
    name text,
    content_type text,
    size_bytes bigint,
    is_inline boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    kind text DEFAULT 'file'::text NOT NULL,
    graph_size bigint,
    content_id text,
    sha256 text,
    fetch_error text,
    transient_error text,
    fetched_at timestamp with time zone,
    fetch_job_id uuid,
    fetch_run_id uuid,
    deduplicated boolean DEFAULT false NOT NULL,
    CONSTRAINT email_attachments_kind_check CHECK ((kind = ANY (ARRAY['file'::text, 'item'::text, 'reference'::text]))),
    CONSTRAINT email_attachments_sha256_check CHECK ((sha256 ~ '^[0-9a-f]{64}$'::text))
);

ALTER TABLE ONLY public.email_attachments FORCE ROW LEVEL SECURITY;

CREATE VIEW public.attachment_contents WITH (security_invoker='true') AS
 SELECT a.store_id,
    a.email_graph_id,
    a.graph_attachment_id,
    a.kind,
    a.name,
    a.content_type,
    a.is_inline,
    a.size_bytes,
    a.sha256,
    b.content
   FROM (public.email_attachments a
     LEFT JOIN public.attachment_blobs b ON (((b.business_id = a.business_id) AND (b.sha256 = a.sha256))));

CREATE TABLE public.attachment_listings (
    business_id uuid NOT NULL,
    store_id uuid NOT NULL,
    email_graph_id text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    listed_at timestamp with time zone,
    list_error text,
    job_id uuid,
    run_id uuid
);

ALTER TABLE ONLY public.attachment_listings FORCE ROW LEVEL SECURITY;

CREATE VIEW public.chunk_processing_status AS
SELECT
    NULL::uuid AS parent_sync_job_id,
    NULL::uuid AS business_id,
    NULL::uuid AS store_id,
    NULL::text AS job_status,
    NULL::bigint AS total_chunks,
    NULL::bigint AS pending_chunks,
    NULL::bigint AS processing_chunks,
    NULL::bigint AS retrying_chunks,
    NULL::bigint AS completed_chunks,
    NULL::bigint AS failed_chunks,
    NULL::bigint AS emails_processed,
    NULL::bigint AS emails_failed,
    NULL::bigint AS api_calls_made,
    NULL::text AS overall_status,
    NULL::numeric AS progress_percentage;

ALTER TABLE public.email_attachments ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.email_attachments_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.email_removals (
    business_id uuid NOT NULL,
    store_id uuid NOT NULL,
    job_id uuid NOT NULL,
    folder_id text NOT NULL,
    graph_id text NOT NULL,
    applied boolean DEFAULT false NOT NULL,
    deleted boolean DEFAULT false NOT NULL
);

ALTER TABLE ONLY public.email_removals FORCE ROW LEVEL SECURITY;

CREATE TABLE public.emails (
    id bigint NOT NULL,
    business_id uuid NOT NULL,
    store_id uuid NOT NULL,
    graph_id text NOT NULL,
    internet_message_id text,
    conversation_id text,
    subject text,
    sender_name text,
    sender_address text,
    from_address text,
    to_recipients jsonb DEFAULT '[]'::jsonb NOT NULL,
    cc_recipients jsonb DEFAULT '[]'::jsonb NOT NULL,
    received_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    body_content_type text,
    body text,
    body_preview text,
    has_attachments boolean DEFAULT false NOT NULL,
    is_read boolean,
    importance text,
    parent_folder_id text,
    content_hash text NOT NULL,
    sync_job_id uuid,
    first_synced_at timestamp with time zone DEFAULT now() NOT NULL,
    last_synced_at timestamp with time zone DEFAULT now() NOT NULL,
    deleted_at timestamp with time zone,
    categories jsonb DEFAULT '[]'::jsonb NOT NULL
);

ALTER TABLE ONLY public.emails FORCE ROW LEVEL SECURITY;

ALTER TABLE public.emails ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.emails_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE UNLOGGED TABLE public.graph_leases (
    lease_id uuid NOT NULL,
    key text NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    slots integer DEFAULT 1 NOT NULL,
    CONSTRAINT graph_leases_slots_check CHECK ((slots >= 1))
);

CREATE UNLOGGED TABLE public.graph_limits (
    key text NOT NULL,
    max_in_flight integer NOT NULL,
    paused_until timestamp with time zone,
    requests bigint DEFAULT 0 NOT NULL,
    throttled bigint DEFAULT 0 NOT NULL,
    waits bigint DEFAULT 0 NOT NULL,
    budget integer,
    span_s double precision,
    slice_s double precision,
    CONSTRAINT graph_limits_budget_check CHECK ((budget >= 1)),
    CONSTRAINT graph_limits_max_in_flight_check CHECK ((max_in_flight >= 1)),
    CONSTRAINT graph_limits_slice_s_check CHECK ((slice_s > (0)::double precision)),
    CONSTRAINT graph_limits_span_s_check CHECK ((span_s > (0)::double precision))
);

COMMENT ON COLUMN public.graph_limits.budget IS 'requests allowed in any span_s seconds';

COMMENT ON COLUMN public.graph_limits.span_s IS 'Graph''s window plus the arrival headroom';

COMMENT ON COLUMN public.graph_limits.slice_s IS 'the granularity of graph_window';

CREATE TABLE public.graph_subscriptions (
    id text NOT NULL,
    business_id uuid NOT NULL,
    store_id uuid NOT NULL,
    resource text NOT NULL,
    client_state_sha256 bytea NOT NULL,
    notification_url text NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    renewed_at timestamp with time zone,
    last_notification_at timestamp with time zone,
    notifications bigint DEFAULT 0 NOT NULL,
    CONSTRAINT graph_subscriptions_client_state_sha256_check CHECK ((length(client_state_sha256) = 32))
);

ALTER TABLE ONLY public.graph_subscriptions FORCE ROW LEVEL SECURITY;

CREATE UNLOGGED TABLE public.graph_window (
    key text NOT NULL,
    slice bigint NOT NULL,
    requests integer NOT NULL,
    CONSTRAINT graph_window_requests_check CHECK ((requests >= 0))
);

CREATE TABLE public.mail_folders (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    business_id uuid NOT NULL,
    store_id uuid NOT NULL,
    graph_id text NOT NULL,
    parent_graph_id text,
    display_name text NOT NULL,
    path text NOT NULL,
    well_known_name text,
    is_hidden boolean DEFAULT false NOT NULL,
    total_item_count integer,
    delta_link text,
    synced_at timestamp with time zone,
    last_seen_at timestamp with time zone DEFAULT now() NOT NULL,
    deleted_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

ALTER TABLE ONLY public.mail_folders FORCE ROW LEVEL SECURITY;

CREATE TABLE public.notification_drops (
    reason text NOT NULL,
    count bigint DEFAULT 0 NOT NULL,
    last_at timestamp with time zone,
    CONSTRAINT notification_drops_reason_check CHECK ((reason = ANY (ARRAY['unknown_subscription'::text, 'client_state'::text, 'malformed'::text])))
);

CREATE TABLE public.notification_outbox (
    id bigint NOT NULL,
    business_id uuid NOT NULL,
    store_id uuid NOT NULL,
    subscription_id text NOT NULL,
    kind text NOT NULL,
    resource text,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    relayed_at timestamp with time zone,
    CONSTRAINT notification_outbox_kind_check CHECK ((kind = ANY (ARRAY['created'::text, 'updated'::text, 'deleted'::text, 'missed'::text, 'subscriptionRemoved'::text, 'reauthorizationRequired'::text])))
);

ALTER TABLE ONLY public.notification_outbox FORCE ROW LEVEL SECURITY;

ALTER TABLE public.notification_outbox ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.notification_outbox_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL,
    sha256 text,
    CONSTRAINT schema_migrations_sha256_check CHECK ((sha256 ~ '^[0-9a-f]{64}$'::text))
);

CREATE TABLE public.sync_queue (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    business_id uuid NOT NULL,
    store_id uuid NOT NULL,
    sync_type text NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    sync_from timestamp with time zone,
    sync_to timestamp with time zone,
    chunk_size integer NOT NULL,
    page_size integer NOT NULL,
    estimated_emails integer,
    total_chunks integer,
    emails_processed integer DEFAULT 0 NOT NULL,
    emails_failed integer DEFAULT 0 NOT NULL,
    api_calls_made integer DEFAULT 0 NOT NULL,
    error_message text,
    error_category text,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    started_at timestamp with time zone,
    completed_at timestamp with time zone,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    folder text DEFAULT 'all'::text NOT NULL,
    force_full boolean DEFAULT false NOT NULL,
    folders integer,
    emails_added integer DEFAULT 0 NOT NULL,
    emails_updated integer DEFAULT 0 NOT NULL,
    emails_deleted integer DEFAULT 0 NOT NULL,
    delta_resets integer DEFAULT 0 NOT NULL,
    delta_fallbacks integer DEFAULT 0 NOT NULL,
    folders_unchanged integer DEFAULT 0 NOT NULL,
    CONSTRAINT sync_queue_check CHECK (((sync_from IS NULL) OR (sync_to IS NULL) OR (sync_from < sync_to))),
    CONSTRAINT sync_queue_chunk_size_check CHECK ((chunk_size > 0)),
    CONSTRAINT sync_queue_estimated_emails_check CHECK ((estimated_emails >= 0)),
    CONSTRAINT sync_queue_page_size_check CHECK (((page_size >= 1) AND (page_size <= 1000))),
    CONSTRAINT sync_queue_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'running'::text, 'completed'::text, 'partial_failure'::text, 'failed'::text]))),
    CONSTRAINT sync_queue_sync_type_check CHECK ((sync_type = ANY (ARRAY['full'::text, 'incremental'::text, 'date_range'::text]))),
    CONSTRAINT sync_queue_total_chunks_check CHECK ((total_chunks >= 0))
);

ALTER TABLE ONLY public.sync_queue FORCE ROW LEVEL SECURITY;

COMMENT ON COLUMN public.sync_queue.folders_unchanged IS 'folders whose delta round came back empty at planning (no chunk was created for them)';

CREATE TABLE public.sync_state_checkpoints (
    id bigint NOT NULL,
    business_id uuid NOT NULL,
    store_id uuid NOT NULL,
    sync_job_id uuid NOT NULL,
    chunk_id uuid NOT NULL,
    chunk_index integer NOT NULL,
    cursor jsonb NOT NULL,
    emails_processed integer NOT NULL,
    exhausted boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    folder_id text
);

ALTER TABLE ONLY public.sync_state_checkpoints FORCE ROW LEVEL SECURITY;

ALTER TABLE public.sync_state_checkpoints ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.sync_state_checkpoints_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

ALTER TABLE ONLY public.attachment_blobs
    ADD CONSTRAINT attachment_blobs_pkey PRIMARY KEY (business_id, sha256);

ALTER TABLE ONLY public.attachment_listings
    ADD CONSTRAINT attachment_listings_pkey PRIMARY KEY (store_id, email_graph_id);

ALTER TABLE ONLY public.chunked_sync_jobs
    ADD CONSTRAINT chunked_sync_jobs_id_business_id_key UNIQUE (id, business_id);

ALTER TABLE ONLY public.chunked_sync_jobs
    ADD CONSTRAINT chunked_sync_jobs_parent_sync_job_id_chunk_index_key UNIQUE (parent_sync_job_id, chunk_index);

ALTER TABLE ONLY public.chunked_sync_jobs
    ADD CONSTRAINT chunked_sync_jobs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.email_attachments
    ADD CONSTRAINT email_attachments_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.email_attachments
    ADD CONSTRAINT email_attachments_store_id_email_graph_id_graph_attachment__key UNIQUE (store_id, email_graph_id, graph_attachment_id);

ALTER TABLE ONLY public.email_removals
    ADD CONSTRAINT email_removals_pkey PRIMARY KEY (job_id, graph_id, folder_id);

ALTER TABLE ONLY public.emails
    ADD CONSTRAINT emails_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.emails
    ADD CONSTRAINT emails_store_id_graph_id_key UNIQUE (store_id, graph_id);

ALTER TABLE ONLY public.graph_leases
    ADD CONSTRAINT graph_leases_pkey PRIMARY KEY (key, lease_id);

ALTER TABLE ONLY public.graph_limits
    ADD CONSTRAINT graph_limits_pkey PRIMARY KEY (key);

ALTER TABLE ONLY public.graph_subscriptions
    ADD CONSTRAINT graph_subscriptions_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.graph_window
    ADD CONSTRAINT graph_window_pkey PRIMARY KEY (key, slice);

ALTER TABLE ONLY public.mail_folders
    ADD CONSTRAINT mail_folders_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.mail_folders
    ADD CONSTRAINT mail_folders_store_id_graph_id_key UNIQUE (store_id, graph_id);

ALTER TABLE ONLY public.notification_drops
    ADD CONSTRAINT notification_drops_pkey PRIMARY KEY (reason);

ALTER TABLE ONLY public.notification_outbox
    ADD CONSTRAINT notification_outbox_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);

ALTER TABLE ONLY public.stores
    ADD CONSTRAINT stores_business_id_mailbox_key UNIQUE (business_id, mailbox);

ALTER TABLE ONLY public.stores
    ADD CONSTRAINT stores_id_business_id_key UNIQUE (id, business_id);

ALTER TABLE ONLY public.stores
    ADD CONSTRAINT stores_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.sync_queue
    ADD CONSTRAINT sync_queue_id_business_id_key UNIQUE (id, business_id);

ALTER TABLE ONLY public.sync_queue
    ADD CONSTRAINT sync_queue_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.sync_state_checkpoints
    ADD CONSTRAINT sync_state_checkpoints_pkey PRIMARY KEY (id);

CREATE INDEX attachment_listings_pending ON public.attachment_listings USING btree (store_id) WHERE (listed_at IS NULL);

CREATE INDEX chunked_sync_jobs_created ON public.chunked_sync_jobs USING btree (created_at);

CREATE INDEX chunked_sync_jobs_processing ON public.chunked_sync_jobs USING btree (heartbeat_at) WHERE (status = 'processing'::text);

CREATE INDEX chunked_sync_jobs_store ON public.chunked_sync_jobs USING btree (store_id, created_at);

CREATE INDEX email_attachments_fetch_job ON public.email_attachments USING btree (fetch_job_id) WHERE (fetch_job_id IS NOT NULL);

CREATE INDEX email_attachments_pending ON public.email_attachments USING btree (store_id) WHERE ((fetched_at IS NULL) AND (fetch_error IS NULL) AND (kind <> 'reference'::text));

CREATE INDEX email_attachments_sha256 ON public.email_attachments USING btree (business_id, sha256) WHERE (sha256 IS NOT NULL);

CREATE INDEX emails_store_folder_live ON public.emails USING btree (store_id, parent_folder_id) WHERE (deleted_at IS NULL);

CREATE INDEX graph_leases_lease ON public.graph_leases USING btree (lease_id);

CREATE INDEX graph_subscriptions_expiry ON public.graph_subscriptions USING btree (business_id, expires_at);

CREATE UNIQUE INDEX graph_subscriptions_store ON public.graph_subscriptions USING btree (store_id);

CREATE INDEX notification_outbox_pending ON public.notification_outbox USING btree (business_id, store_id, id) WHERE (relayed_at IS NULL);

CREATE INDEX notification_outbox_received ON public.notification_outbox USING btree (store_id, received_at);

CREATE INDEX stores_due ON public.stores USING btree (business_id, next_due_at) WHERE ((registered_at IS NOT NULL) AND enabled);

CREATE INDEX sync_queue_finished ON public.sync_queue USING btree (status, completed_at);

CREATE UNIQUE INDEX sync_queue_one_active_per_store ON public.sync_queue USING btree (store_id) WHERE (status = ANY (ARRAY['pending'::text, 'running'::text]));

CREATE INDEX sync_queue_store_created ON public.sync_queue USING btree (store_id, created_at);

CREATE INDEX sync_state_checkpoints_job ON public.sync_state_checkpoints USING btree (sync_job_id, folder_id, id DESC);

CREATE OR REPLACE VIEW public.chunk_processing_status WITH (security_invoker='true') AS
 SELECT q.id AS parent_sync_job_id,
    q.business_id,
    q.store_id,
    q.status AS job_status,
    count(c.id) AS total_chunks,
    count(c.id) FILTER (WHERE (c.status = 'pending'::text)) AS pending_chunks,
    count(c.id) FILTER (WHERE (c.status = 'processing'::text)) AS processing_chunks,
    count(c.id) FILTER (WHERE (c.status = 'retrying'::text)) AS retrying_chunks,
    count(c.id) FILTER (WHERE (c.status = 'completed'::text)) AS completed_chunks,
    count(c.id) FILTER (WHERE (c.status = 'failed'::text)) AS failed_chunks,
    COALESCE(sum(c.emails_processed), (0)::bigint) AS emails_processed,
    COALESCE(sum(c.emails_failed), (0)::bigint) AS emails_failed,
    COALESCE(sum(c.api_calls_made), (0)::bigint) AS api_calls_made,
        CASE
            WHEN (count(c.id) = 0) THEN q.status
            WHEN (count(c.id) FILTER (WHERE (c.status = ANY (ARRAY['completed'::text, 'failed'::text]))) < count(c.id)) THEN
            CASE
                WHEN (count(c.id) FILTER (WHERE (c.status <> 'pending'::text)) = 0) THEN 'pending'::text
                ELSE 'processing'::text
            END
            WHEN (count(c.id) FILTER (WHERE (c.status = 'failed'::text)) > 0) THEN 'partial_failure'::text
            ELSE 'completed'::text
        END AS overall_status,
        CASE
            WHEN (count(c.id) = 0) THEN (0)::numeric
            ELSE round(((100.0 * (count(c.id) FILTER (WHERE (c.status = ANY (ARRAY['completed'::text, 'failed'::text]))))::numeric) / (count(c.id))::numeric), 1)
        END AS progress_percentage
   FROM (public.sync_queue q
     LEFT JOIN public.chunked_sync_jobs c ON ((c.parent_sync_job_id = q.id)))
  GROUP BY q.id;

CREATE TRIGGER sync_queue_missed_notifications AFTER UPDATE OF status ON public.sync_queue FOR EACH ROW EXECUTE FUNCTION public.notification_record_missed();

CREATE TRIGGER sync_queue_registry AFTER INSERT OR UPDATE OF status ON public.sync_queue FOR EACH ROW EXECUTE FUNCTION public.registry_record_job();

ALTER TABLE ONLY public.attachment_listings
    ADD CONSTRAINT attachment_listings_store_id_business_id_fkey FOREIGN KEY (store_id, business_id) REFERENCES public.stores(id, business_id) ON DELETE CASCADE;

ALTER TABLE ONLY public.chunked_sync_jobs
    ADD CONSTRAINT chunked_sync_jobs_parent_sync_job_id_business_id_fkey FOREIGN KEY (parent_sync_job_id, business_id) REFERENCES public.sync_queue(id, business_id) ON DELETE CASCADE;

ALTER TABLE ONLY public.chunked_sync_jobs
    ADD CONSTRAINT chunked_sync_jobs_store_id_business_id_fkey FOREIGN KEY (store_id, business_id) REFERENCES public.stores(id, business_id) ON DELETE CASCADE;

ALTER TABLE ONLY public.email_attachments
    ADD CONSTRAINT email_attachments_business_id_sha256_fkey FOREIGN KEY (business_id, sha256) REFERENCES public.attachment_blobs(business_id, sha256);

ALTER TABLE ONLY public.email_attachments
    ADD CONSTRAINT email_attachments_store_id_business_id_fkey FOREIGN KEY (store_id, business_id) REFERENCES public.stores(id, business_id) ON DELETE CASCADE;

ALTER TABLE ONLY public.email_removals
    ADD CONSTRAINT email_removals_job_id_business_id_fkey FOREIGN KEY (job_id, business_id) REFERENCES public.sync_queue(id, business_id) ON DELETE CASCADE;

ALTER TABLE ONLY public.email_removals
    ADD CONSTRAINT email_removals_store_id_business_id_fkey FOREIGN KEY (store_id, business_id) REFERENCES public.stores(id, business_id) ON DELETE CASCADE;

ALTER TABLE ONLY public.emails
    ADD CONSTRAINT emails_store_id_business_id_fkey FOREIGN KEY (store_id, business_id) REFERENCES public.stores(id, business_id) ON DELETE CASCADE;

ALTER TABLE ONLY public.graph_leases
    ADD CONSTRAINT graph_leases_key_fkey FOREIGN KEY (key) REFERENCES public.graph_limits(key) ON DELETE CASCADE;

ALTER TABLE ONLY public.graph_subscriptions
    ADD CONSTRAINT graph_subscriptions_store_id_business_id_fkey FOREIGN KEY (store_id, business_id) REFERENCES public.stores(id, business_id) ON DELETE CASCADE;

ALTER TABLE ONLY public.graph_window
    ADD CONSTRAINT graph_window_key_fkey FOREIGN KEY (key) REFERENCES public.graph_limits(key) ON DELETE CASCADE;

ALTER TABLE ONLY public.mail_folders
    ADD CONSTRAINT mail_folders_store_id_business_id_fkey FOREIGN KEY (store_id, business_id) REFERENCES public.stores(id, business_id) ON DELETE CASCADE;

ALTER TABLE ONLY public.notification_outbox
    ADD CONSTRAINT notification_outbox_store_id_business_id_fkey FOREIGN KEY (store_id, business_id) REFERENCES public.stores(id, business_id) ON DELETE CASCADE;

ALTER TABLE ONLY public.sync_queue
    ADD CONSTRAINT sync_queue_store_id_business_id_fkey FOREIGN KEY (store_id, business_id) REFERENCES public.stores(id, business_id) ON DELETE CASCADE;

ALTER TABLE ONLY public.sync_state_checkpoints
    ADD CONSTRAINT sync_state_checkpoints_chunk_id_business_id_fkey FOREIGN KEY (chunk_id, business_id) REFERENCES public.chunked_sync_jobs(id, business_id) ON DELETE CASCADE;

ALTER TABLE ONLY public.sync_state_checkpoints
    ADD CONSTRAINT sync_state_checkpoints_store_id_business_id_fkey FOREIGN KEY (store_id, business_id) REFERENCES public.stores(id, business_id) ON DELETE CASCADE;

ALTER TABLE ONLY public.sync_state_checkpoints
    ADD CONSTRAINT sync_state_checkpoints_sync_job_id_business_id_fkey FOREIGN KEY (sync_job_id, business_id) REFERENCES public.sync_queue(id, business_id) ON DELETE CASCADE;

ALTER TABLE public.attachment_blobs ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.attachment_listings ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.chunked_sync_jobs ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.email_attachments ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.email_removals ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.emails ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.graph_subscriptions ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.mail_folders ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.notification_outbox ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.stores ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.sync_queue ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.sync_state_checkpoints ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON public.attachment_blobs USING ((business_id = public.current_business_id())) WITH CHECK ((business_id = public.current_business_id()));

CREATE POLICY tenant_isolation ON public.attachment_listings USING ((business_id = public.current_business_id())) WITH CHECK ((business_id = public.current_business_id()));

CREATE POLICY tenant_isolation ON public.chunked_sync_jobs USING ((business_id = public.current_business_id())) WITH CHECK ((business_id = public.current_business_id()));

CREATE POLICY tenant_isolation ON public.email_attachments USING ((business_id = public.current_business_id())) WITH CHECK ((business_id = public.current_business_id()));

CREATE POLICY tenant_isolation ON public.email_removals USING ((business_id = public.current_business_id())) WITH CHECK ((business_id = public.current_business_id()));

CREATE POLICY tenant_isolation ON public.emails USING ((business_id = public.current_business_id())) WITH CHECK ((business_id = public.current_business_id()));

CREATE POLICY tenant_isolation ON public.graph_subscriptions USING ((business_id = public.current_business_id())) WITH CHECK ((business_id = public.current_business_id()));

CREATE POLICY tenant_isolation ON public.mail_folders USING ((business_id = public.current_business_id())) WITH CHECK ((business_id = public.current_business_id()));

CREATE POLICY tenant_isolation ON public.notification_outbox USING ((business_id = public.current_business_id())) WITH CHECK ((business_id = public.current_business_id()));

CREATE POLICY tenant_isolation ON public.stores USING ((business_id = public.current_business_id())) WITH CHECK ((business_id = public.current_business_id()));

CREATE POLICY tenant_isolation ON public.sync_queue USING ((business_id = public.current_business_id())) WITH CHECK ((business_id = public.current_business_id()));

CREATE POLICY tenant_isolation ON public.sync_state_checkpoints USING ((business_id = public.current_business_id())) WITH CHECK ((business_id = public.current_business_id()));
