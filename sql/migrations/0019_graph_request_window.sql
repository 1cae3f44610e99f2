-- Graph's request budget as a sliding window, not a token bucket.
--
-- Outlook allows 10,000 requests per mailbox in any 10 minutes. The bucket of 0007 held
-- 200 tokens and refilled 16.3 a second (so that no window could hold more): after the
-- first 200 requests, a mailbox was paced at 16 a second however few it needed in all. On a
-- first sync that is what fetching attachments cost: 883 requests for 2,000 messages took
-- 42 s (load 17), nearly all of it waiting for tokens (the limit's in-flight slots mostly free). A
-- window counts what was really sent: any number up to the budget goes at once, and only
-- a mailbox that has used its 10,000 waits, until its oldest requests leave the window.
--
-- graph_window holds, per limit, the slots granted in each slice of time (slice_s, a
-- sixtieth of span_s: at most 61 rows a limit). A slot is granted only when the slices
-- that overlap the last span_s seconds (the window plus the arrival headroom) hold fewer
-- than budget: every request of the last span_s seconds is counted (the oldest slice in
-- full), so no window of span_s seconds ever holds more than budget.

ALTER TABLE graph_limits
    DROP COLUMN capacity, DROP COLUMN refill_per_s, DROP COLUMN tokens, DROP COLUMN refilled_at,
    ADD COLUMN budget integer CHECK (budget >= 1),
    ADD COLUMN span_s double precision CHECK (span_s > 0),
    ADD COLUMN slice_s double precision CHECK (slice_s > 0);
COMMENT ON COLUMN graph_limits.budget IS 'requests allowed in any span_s seconds';
COMMENT ON COLUMN graph_limits.span_s IS 'Graph''s window plus the arrival headroom';
COMMENT ON COLUMN graph_limits.slice_s IS 'the granularity of graph_window';

CREATE UNLOGGED TABLE graph_window (
    key      text    NOT NULL REFERENCES graph_limits (key) ON DELETE CASCADE,
    slice    bigint  NOT NULL,  -- floor(epoch seconds / slice_s)
    requests integer NOT NULL CHECK (requests >= 0),
    PRIMARY KEY (key, slice)
);
ALTER TABLE graph_window OWNER TO mailsync_owner;
REVOKE ALL ON graph_window FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON graph_window TO mailsync_worker;
GRANT SELECT ON graph_window TO mailsync_reporting, mailsync_maintenance;

-- As 0016's, with the window in place of the bucket: p_limits is a JSON array of {key,
-- max_in_flight, budget, span_s, slice_s, slots?, tokens?}. Nothing is taken unless every
-- limit has room; wait_s says when to ask again (a pause's end; the moment the oldest
-- slice leaves the window; 0 for an in-flight slot, which cannot be predicted).
CREATE OR REPLACE FUNCTION acquire_graph_slot(p_limits jsonb, p_lease_s double precision)
RETURNS TABLE (lease_id uuid, wait_s double precision, reason text)
LANGUAGE plpgsql AS $$
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
