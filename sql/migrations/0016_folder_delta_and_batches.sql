-- Issue 23: a no-change cycle in ~2 requests.
--
-- 1. The folder tree is kept current by Graph's mailFolders/delta: its deltaLink is kept
--    per store (NULL: the next sync reads the tree whole).
-- 2. A folder whose round, asked in a JSON $batch at planning, came back empty gets no
--    chunk: the job counts it (folders_unchanged).
-- 3. A $batch is one HTTP request but Graph runs up to 4 of its items at once against the
--    mailbox and counts each against the mailbox's budget: a lease may hold several
--    in-flight slots (slots) and take several tokens of the bucket (tokens in p_limits).

ALTER TABLE stores ADD COLUMN folders_delta_link text;
COMMENT ON COLUMN stores.folders_delta_link IS
    'where the next mailFolders/delta round starts; NULL: read the folder tree whole';

ALTER TABLE sync_queue ADD COLUMN folders_unchanged integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN sync_queue.folders_unchanged IS
    'folders whose delta round came back empty at planning (no chunk was created for them)';

ALTER TABLE graph_leases ADD COLUMN slots integer NOT NULL DEFAULT 1 CHECK (slots >= 1);

-- As 0007's, but each limit of p_limits may say how many in-flight slots ("slots") and how
-- many tokens ("tokens") this lease takes (default 1 each); a lease holds its slots until
-- released. A weight above max_in_flight is taken as max_in_flight (it could never fit).
CREATE OR REPLACE FUNCTION acquire_graph_slot(p_limits jsonb, p_lease_s double precision)
RETURNS TABLE (lease_id uuid, wait_s double precision, reason text)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_lease uuid := gen_random_uuid();
    v_keys text[];
    v_wait double precision := -1;
    v_reason text;
    v record;
    v_in_flight integer;
    v_tokens double precision;
    v_this double precision;
BEGIN
    INSERT INTO graph_limits AS g (key, max_in_flight, capacity, refill_per_s, tokens)
    SELECT x.key, x.max_in_flight, x.capacity, x.refill_per_s, x.capacity
      FROM jsonb_to_recordset(p_limits)
           AS x(key text, max_in_flight integer, capacity double precision,
                refill_per_s double precision)
     ORDER BY x.key
    ON CONFLICT (key) DO UPDATE
       SET max_in_flight = EXCLUDED.max_in_flight, capacity = EXCLUDED.capacity,
           refill_per_s = EXCLUDED.refill_per_s
     WHERE (g.max_in_flight, g.capacity, g.refill_per_s)
           IS DISTINCT FROM (EXCLUDED.max_in_flight, EXCLUDED.capacity, EXCLUDED.refill_per_s);
    SELECT array_agg(x.key ORDER BY x.key) INTO v_keys
      FROM jsonb_to_recordset(p_limits) AS x(key text);
    FOR v IN SELECT g.*,
                    least(g.max_in_flight, greatest(1, coalesce(x.slots, 1))) AS want_slots,
                    least(g.capacity, greatest(1, coalesce(x.tokens, 1))) AS want_tokens
               FROM graph_limits AS g
               JOIN jsonb_to_recordset(p_limits) AS x(key text, slots integer, tokens integer)
                 ON x.key = g.key
              ORDER BY g.key
                FOR UPDATE OF g LOOP
        DELETE FROM graph_leases AS l WHERE l.key = v.key AND l.expires_at < v_now;
        v_tokens := least(v.capacity,
                          v.tokens + v.refill_per_s * extract(epoch FROM v_now - v.refilled_at));
        UPDATE graph_limits SET tokens = v_tokens, refilled_at = v_now WHERE key = v.key;
        SELECT coalesce(sum(l.slots), 0) INTO v_in_flight FROM graph_leases AS l
         WHERE l.key = v.key;
        v_this := -1;
        IF v.paused_until > v_now THEN
            v_this := extract(epoch FROM v.paused_until - v_now);
            v_reason := coalesce(v_reason, 'paused: ' || v.key);
        ELSIF v_in_flight + v.want_slots > v.max_in_flight THEN
            v_this := 0;
            v_reason := coalesce(v_reason, 'in flight: ' || v.key);
        ELSIF v_tokens < v.want_tokens THEN
            v_this := (v.want_tokens - v_tokens) / v.refill_per_s;
            v_reason := coalesce(v_reason, 'budget: ' || v.key);
        END IF;
        v_wait := greatest(v_wait, v_this);
    END LOOP;
    IF v_wait >= 0 THEN
        UPDATE graph_limits AS g SET waits = g.waits + 1 WHERE g.key = ANY (v_keys);
        RETURN QUERY SELECT NULL::uuid, v_wait, v_reason;
        RETURN;
    END IF;
    UPDATE graph_limits AS g
       SET tokens = g.tokens - least(g.capacity, greatest(1, coalesce(x.tokens, 1))),
           requests = g.requests + greatest(1, coalesce(x.tokens, 1))
      FROM jsonb_to_recordset(p_limits) AS x(key text, tokens integer)
     WHERE g.key = x.key;
    INSERT INTO graph_leases (lease_id, key, expires_at, slots)
    SELECT v_lease, g.key, v_now + make_interval(secs => p_lease_s),
           least(g.max_in_flight, greatest(1, coalesce(x.slots, 1)))
      FROM graph_limits AS g
      JOIN jsonb_to_recordset(p_limits) AS x(key text, slots integer) ON x.key = g.key;
    RETURN QUERY SELECT v_lease, 0::double precision, NULL::text;
END;
$$;

-- A job whose every folder came back unchanged has no chunk at all: zero is a plan.
ALTER TABLE sync_queue DROP CONSTRAINT sync_queue_total_chunks_check,
    ADD CONSTRAINT sync_queue_total_chunks_check CHECK (total_chunks >= 0);
